"""The evidence driver (benchmarks/evidence.py) on tiny_amazon: cache, seeds, lr stage, failures, reports."""
import json
import math
import os
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import evidence as ev  # noqa: E402
import evidence_report as report  # noqa: E402
from evidence_suites import SUITES, Entry, Suite  # noqa: E402

from interformer_fuxi.config import load_expid  # noqa: E402
from interformer_fuxi.errors import UserError  # noqa: E402
from interformer_fuxi.runner import prepare  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Configs + tiny_amazon copied once per module (the H5 build is shared by the tests)."""
    root = tmp_path_factory.mktemp("evidence")
    shutil.copytree(os.path.join(REPO, "config"), root / "config")
    shutil.copytree(os.path.join(REPO, "data", "tiny_amazon"), root / "data" / "tiny_amazon")
    return root


def context(tiny, tmp_path, lrs=(3e-3,), jobs=1):
    protocol = ev.load_protocol(ev.DEFAULT_PROTOCOL, "tiny_amazon")
    protocol["params"]["epochs"] = 1
    protocol["lrs"] = list(lrs)
    return ev.Context("tiny_amazon", str(tiny / "config"), protocol, str(tmp_path / "results"),
                      tiny=True, jobs=jobs, threads=1)


def records_of(ctx):
    return [json.load(open(os.path.join(ctx.results_dir, f)))
            for f in sorted(os.listdir(ctx.results_dir)) if f.endswith(".json")]


MINI = Suite("mini", "mini", (Entry("InterFormer", "InterFormer", {"num_layers": 1}), Entry("DOT", "DOT")),
             reference="InterFormer", seeds=1)


def test_two_run_suite_table_cache_and_chart(tiny, tmp_path, monkeypatch):
    ctx = context(tiny, tmp_path)
    lines = []
    [text] = ev.run_suites(ctx, [MINI], lambda s: 1, out=lines.append)
    assert any(line.startswith("Plan: stage 1 (lr search): 2 runs, 0 cached, 2 to do") for line in lines)
    records = {r["entry"]: r for r in records_of(ctx)}
    assert set(records) == {"InterFormer", "DOT"}
    for name, r in records.items():
        assert r["status"] == "ok" and r["template"] == f"{name}_tiny" and r["seed"] == 2024
        assert r["params"]["dataset_id"] == "tiny_amazon" and r["params"]["epochs"] == 1
        assert r["epochs_trained"] == 1 and r["best_epoch"] == 1 and len(r["epoch_seconds"]) == 1
        assert 0 < r["train_seconds_per_epoch"] < r["epoch_seconds"][0]
        assert r["num_params"] > 0 and os.path.isfile(r["log"])
        assert not any(f.endswith(".model") for _, _, fs in os.walk(ctx.results_dir) for f in fs)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0].split(" | ")[:4] == ["| entry", "lr", "seeds", "test gAUC"]
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table[1:]}
    assert set(rows) == {"InterFormer", "DOT"}
    for name, cells in rows.items():
        auc = records[name]["test"]["AUC"]
        assert cells[4] == f"{auc:.4f} ± 0.0000 " + ("(ref)" if name == "InterFormer" else "?")
        assert cells[7] == f"{records[name]['num_params']:,}"
    frame = pd.read_csv(os.path.join(ctx.results_dir, "mini-tiny.csv"))
    assert list(frame["entry"]) == ["InterFormer", "DOT"]
    assert frame.loc[1, "gAUC"] == pytest.approx(records["DOT"]["test"]["gAUC"])
    assert os.path.getsize(os.path.join(ctx.results_dir, "mini-tiny.png")) > 1000
    minutes = sum(r["wall_seconds"] for r in records.values()) / 60
    assert f"- runs: 2 (lr search included), {minutes:.1f} minutes of run time" in text

    # a rerun trains nothing and writes the same table
    monkeypatch.setattr(ev, "execute", lambda spec: pytest.fail("a cached run was trained again"))
    lines = []
    [again] = ev.run_suites(ctx, [MINI], lambda s: 1, out=lines.append)
    assert any(line.startswith("Plan: stage 1 (lr search): 2 runs, 2 cached, 0 to do") for line in lines)
    assert again == text


def test_seeds_are_distinct_runs_with_a_std(tiny, tmp_path):
    ctx = context(tiny, tmp_path)
    suite = Suite("s", "s", (Entry("DOT", "DOT"),), reference="DOT", seeds=2)
    ev.run_suites(ctx, [suite], lambda s: 2, out=lambda line: None)
    records = records_of(ctx)
    assert sorted(r["seed"] for r in records) == [2024, 2025]
    assert len({r["key"] for r in records}) == 2
    aucs = [r["test"]["AUC"] for r in records]
    assert aucs[0] != aucs[1]
    frame = pd.read_csv(os.path.join(ctx.results_dir, "s-tiny.csv"))
    assert frame.loc[0, "seeds_ok"] == 2
    assert frame.loc[0, "AUC_std"] == pytest.approx(np.std(aucs, ddof=1))


def test_lr_is_chosen_on_validation_and_reused_by_stage_2(tiny, tmp_path):
    ctx = context(tiny, tmp_path, lrs=(1e-3, 1e-2))
    suite = Suite("lr", "lr", (Entry("DOT", "DOT"),), reference="DOT", seeds=2)
    ev.run_suites(ctx, [suite], lambda s: 2, out=lambda line: None)
    records = records_of(ctx)
    stage1 = {r["lr"]: r for r in records if r["stage"] == 1}
    assert set(stage1) == {1e-3, 1e-2}
    best = max(stage1, key=lambda lr: stage1[lr]["valid"]["gAUC"] + stage1[lr]["valid"]["AUC"])
    stage2 = [r for r in records if r["stage"] == 2]
    assert [(r["lr"], r["seed"]) for r in stage2] == [(best, 2025)]  # seed 2024 is stage 1's run
    assert pd.read_csv(os.path.join(ctx.results_dir, "lr-tiny.csv")).loc[0, "lr"] == best


def test_an_ablation_trains_at_its_models_lr_without_a_search_of_its_own(tiny, tmp_path):
    ctx = context(tiny, tmp_path, lrs=(1e-3, 1e-2))
    model = Entry("InterFormer", "InterFormer", {"num_layers": 1})
    ablation = Entry("w/o MHA", "InterFormer", {"num_layers": 1, "use_mha": False}, lr_of=model)
    suite = Suite("abl", "abl", (model, ablation), reference="InterFormer", seeds=2)
    lines = []
    ev.run_suites(ctx, [suite], lambda s: 2, out=lines.append)
    assert any(line.startswith("Plan: stage 1 (lr search): 2 runs,") for line in lines)
    records = records_of(ctx)
    stage1 = {r["lr"]: r for r in records if r["stage"] == 1}
    assert set(stage1) == {1e-3, 1e-2} and {r["entry"] for r in stage1.values()} == {"InterFormer"}
    best = max(stage1, key=lambda lr: ev.monitor_value(stage1[lr]))
    ablated = [r for r in records if r["entry"] == "w/o MHA"]
    assert sorted((r["lr"], r["seed"], r["stage"]) for r in ablated) == [(best, 2024, 2), (best, 2025, 2)]
    assert all(r["params"]["use_mha"] is False for r in ablated)
    table = pd.read_csv(os.path.join(ctx.results_dir, "abl-tiny.csv")).set_index("entry")
    assert table.loc["w/o MHA", "lr"] == best and "lr of InterFormer" in table.loc["w/o MHA", "note"]


def test_an_entry_with_its_own_lr_grid_searches_only_that_grid(tiny, tmp_path):
    """``Entry.lrs``: a model tuned in another range (e.g. BARS's BST at 5e-4) keeps its grid."""
    ctx = context(tiny, tmp_path, lrs=(1e-3,))
    own = Entry("DOT at 1e-2", "DOT", lrs=(1e-2,))
    suite = Suite("own", "own", (Entry("DOT", "DOT"), own), reference="DOT", seeds=1)
    ev.run_suites(ctx, [suite], lambda s: 1, out=lambda line: None)
    assert sorted((r["entry"], r["lr"]) for r in records_of(ctx)) == [("DOT", 1e-3), ("DOT at 1e-2", 1e-2)]
    table = pd.read_csv(os.path.join(ctx.results_dir, "own-tiny.csv")).set_index("entry")
    assert table.loc["DOT at 1e-2", "lr"] == 1e-2 and "its own lr grid [0.01]" in table.loc["DOT at 1e-2", "note"]


def test_paper_suites_search_lr_per_model_and_reuse_it_for_ablations():
    fig2 = SUITES["fig2"]
    for arch in ("DOT", "DCNv2", "DHEN"):
        assert fig2.entry(f"{arch}/int").lr_of is None
        assert all(fig2.entry(f"{arch}/{mode}").lr_of.name == f"{arch}/int" for mode in ("sole", "sep", "n2s", "s2n"))
    for name in ("fig5", "layers"):
        owners = {e.lr_of.name for e in SUITES[name].entries if e.lr_of}
        assert owners == {"InterFormer"}
    assert all(e.lr_of is None for e in SUITES["table3"].entries + SUITES["fig3"].entries)


def test_a_failing_run_is_recorded_and_the_others_finish(tiny, tmp_path):
    ctx = context(tiny, tmp_path)
    suite = Suite("f", "f", (Entry("bad", "InterFormer", {"interleave_mode": "both"}), Entry("DOT", "DOT")),
                  reference="DOT", seeds=1)
    [text] = ev.run_suites(ctx, [suite], lambda s: 1, out=lambda line: None)
    records = {r["entry"]: r for r in records_of(ctx)}
    assert records["DOT"]["status"] == "ok"
    assert records["bad"]["status"] == "failed" and "interleave_mode" in records["bad"]["error"]
    assert os.path.isfile(records["bad"]["log"])
    assert "failed at every lr: UserError" in text


def test_subprocess_jobs_match_in_process_runs_and_record_failures(tiny, tmp_path):
    # a key nothing reads (num_layers, a FuxiCTR model key, would only warn with DOT)
    suite = Suite("j", "j", (Entry("DOT", "DOT"), Entry("bad", "DOT", {"num_layer": 2})),
                  reference="DOT", seeds=1)
    ctx = context(tiny, tmp_path, jobs=2)
    ev.run_suites(ctx, [suite], lambda s: 1, out=lambda line: None)
    records = {r["entry"]: r for r in records_of(ctx)}
    assert records["bad"]["status"] == "failed" and "num_layer" in records["bad"]["error"]
    local = ev.execute(dict(ev.make_spec(context(tiny, tmp_path / "local"), suite.entry("DOT"), 3e-3, 2024, 1)))
    assert records["DOT"]["test"] == local["test"]


def test_ties_are_differences_within_the_seed_spread():
    assert report.mark("AUC", 0.801, 0.002, 3, 0.800, 0.001, 3) == "tie"
    assert report.mark("AUC", 0.805, 0.002, 3, 0.800, 0.001, 3) == "better"
    assert report.mark("AUC", 0.795, 0.002, 3, 0.800, 0.006, 3) == "tie"
    assert report.mark("logloss", 0.40, 0.001, 3, 0.45, 0.001, 3) == "better"
    assert report.mark("NE", 0.95, 0.001, 3, 0.90, 0.001, 3) == "worse"
    assert report.mark("AUC", 0.9, 0.0, 1, 0.8, 0.0, 3) == "n/a"  # one seed: no spread

    def rec(auc, seed):
        return {"status": "ok", "test": {"gAUC": auc, "AUC": auc, "logloss": 1 - auc, "NE": 1 - auc},
                "num_params": 10, "train_seconds_per_epoch": 1.0, "best_epoch": 2, "epochs_trained": 3,
                "seed": seed}
    suite = SUITES["fig5"]
    results = {"full": {"lr": 1e-3, "records": [rec(0.80, 1), rec(0.81, 2)]},       # std 0.0071
               "w/o PMA": {"lr": 1e-3, "records": [rec(0.80, 1), rec(0.806, 2)]},   # -0.002: tie
               "w/o MHA": {"lr": 1e-3, "records": [rec(0.70, 1), rec(0.71, 2)]},    # worse
               "w/o PFFN": {"lr": 1e-3, "records": [rec(0.90, 1), rec(0.91, 2)]}}   # better
    oracle = {"gAUC": .9, "AUC": .9, "logloss": .3, "NE": .6}
    rows = {r["entry"]: r for r in report.build_rows(suite, results, oracle)}
    assert rows["full"]["AUC_mark"] == "ref"
    assert rows["w/o PMA"]["AUC_mark"] == "tie" and rows["w/o PMA"]["logloss_mark"] == "tie"
    assert rows["w/o MHA"]["AUC_mark"] == "worse" and rows["w/o MHA"]["NE_mark"] == "worse"
    assert rows["w/o PFFN"]["gAUC_mark"] == "better" and rows["w/o PFFN"]["logloss_mark"] == "better"
    assert rows["w/o gating"]["seeds_ok"] == 0 and math.isnan(rows["w/o gating"]["AUC"])
    assert rows["w/o PMA"]["AUC_std"] == pytest.approx(np.std([0.80, 0.806], ddof=1))
    text = report.markdown(suite, list(rows.values()), ["x"], oracle)
    assert "| w/o PMA | 0.001 | 2/2 | 0.8030 ± 0.0042 = |" in text
    assert "| oracle (true p) |" in text and "| 0.8944 |" in text  # 0.805 / 0.9 for full


def test_fig2_references_its_own_interaction_module_and_charts(tmp_path):
    suite = SUITES["fig2"]
    assert len(suite.entries) == 15 and suite.ref_of(suite.entry("DOT/sole")) == "DOT/int"
    results = {e.name: {"lr": 1e-3, "records": [
        {"status": "ok", "test": {m: 0.7 + 0.01 * i + 0.001 * s for m in report.METRICS}, "num_params": 1,
         "train_seconds_per_epoch": 1.0, "best_epoch": 1, "epochs_trained": 1} for s in range(2)]}
        for i, e in enumerate(suite.entries)}
    rows = report.build_rows(suite, results)
    path = str(tmp_path / "fig2.png")
    report.chart(suite, rows, path, "fig2", oracle={"AUC": 0.9})
    assert os.path.getsize(path) > 1000


def test_oracle_hook_reads_the_datasets_true_probabilities(tiny, tmp_path):
    params = load_expid(str(tiny / "config"), "InterFormer_tiny")
    test = pd.read_csv(params["test_data"])
    rng = np.random.default_rng(0)
    p = np.clip(test["label"] * 0.6 + rng.uniform(0.1, 0.3, len(test)), 0.01, 0.99)
    pd.DataFrame({"p_true": p}).to_csv(tmp_path / "oracle.csv", index=False)
    import oracle
    assert oracle.oracle_metrics(params, {}) is None  # tiny_amazon has no oracle_data
    assert oracle.oracle_metrics(dict(params, oracle_data=str(tmp_path / "missing.csv")), {}) is None
    metrics = oracle.oracle_metrics(dict(params, oracle_data=str(tmp_path / "oracle.csv")), {})
    assert metrics["AUC"] == pytest.approx(1.0) and metrics["gAUC"] == pytest.approx(1.0)
    assert 0 < metrics["NE"] < 1
    pd.DataFrame({"p_true": p[:10]}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(UserError, match="short.csv: 10 rows of p_true"):
        oracle.oracle_metrics(dict(params, oracle_data=str(tmp_path / "short.csv")), {})


def test_dataset_id_override_merges_that_datasets_section(tiny):
    params, feature_map, _ = prepare(str(tiny / "config"), "DOT_default", log=False,
                                     overrides={"dataset_id": "tiny_amazon", "embedding_dim": 8})
    assert params["dataset_id"] == "tiny_amazon" and params["group_id"] == "user_id"
    assert params["train_data"].endswith("train.h5") and "item_history" in feature_map.features
    with pytest.raises(UserError, match="dataset_id 'tiny_amazn' is not in dataset_config; did you mean 'tiny_amazon'"):
        prepare(str(tiny / "config"), "DOT_tiny", log=False, overrides={"dataset_id": "tiny_amazn"})


def test_entries_runs_only_the_named_entries_and_reports_them_all(tiny, tmp_path, monkeypatch):
    ctx = context(tiny, tmp_path)
    ran = []
    monkeypatch.setattr(ev, "run_specs", lambda ctx, specs, desc: ran.extend(specs))
    [text] = ev.run_suites(ctx, [MINI], lambda s: 1, out=lambda line: None, entries=["DOT"])
    assert ran and {s["entry"] for s in ran} == {"DOT"}
    assert "| InterFormer |" in text and "stage 1 not finished" in text  # still in the report
    with pytest.raises(UserError, match="--entries: no entry 'DNN' in suite"):
        ev.run_suites(ctx, [MINI], lambda s: 1, out=lambda line: None, entries=["DNN"])


def test_a_models_revision_keys_its_runs_anew_and_leaves_the_others(tiny, tmp_path, monkeypatch):
    from interformer_fuxi.models import DIN, DOT
    ctx = context(tiny, tmp_path)
    key = lambda name: ev.make_spec(ctx, Entry(name, name), 1e-3, 2024, 1)["key"]
    din, dot = key("DIN"), key("DOT")
    monkeypatch.setattr(DIN, "revision", DIN.revision + 1, raising=False)
    assert key("DIN") != din and key("DOT") == dot


def test_cli_errors_name_the_problem(tiny, tmp_path, capsys):
    assert ev.main(["--suite", "table3", "--dataset", "nope", "--results", str(tmp_path)]) == 2
    assert "protocol.yaml: no protocol for dataset 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ev.main(["--suite", "table3"])
    proto = tmp_path / "protocol.yaml"
    proto.write_text(yaml.safe_dump({"defaults": {"lrs": [1e-3], "seed": 1, "params": {}}, "other": {}}))
    # the dataset has a protocol but not a dataset config: every run fails cleanly, a report is written
    assert ev.main(["--suite", "layers", "--dataset", "other", "--protocol", str(proto), "--config",
                    str(tiny / "config"), "--results", str(tmp_path / "r"), "--report"]) == 0
    assert os.path.isfile(tmp_path / "r" / "other" / "layers.md")


def test_a_worker_that_dies_is_recorded_as_failed(tiny, tmp_path, monkeypatch):
    spec = ev.make_spec(context(tiny, tmp_path, jobs=2), Entry("DOT", "DOT"), 3e-3, 2024, 1)
    monkeypatch.setattr(ev.sys, "executable", "/bin/false")  # an interpreter that exits at once
    record = ev.execute_subprocess(spec)
    assert record["status"] == "failed" and "exited with code 1 before writing" in record["error"]
    assert json.load(open(spec["out"]))["status"] == "failed" and os.path.isfile(record["log"])
