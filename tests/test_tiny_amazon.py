"""Learning on the embedded dataset: the interleaved model beats its no-Sequence-Arch variant."""
from interformer_fuxi.runner import run_expid


def test_interformer_beats_a_same_budget_sole_variant(project):
    auc = {}
    for mode in ("int", "sole"):
        _, _, _, test = run_expid(project / "config", "InterFormer_tiny",
                                  overrides={"interleave_mode": mode, "verbose": 0})
        auc[mode] = test["AUC"]
    assert auc["int"] >= 0.65
    assert auc["int"] > auc["sole"] + 0.01, auc
