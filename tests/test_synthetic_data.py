"""data/make_synthetic.py: determinism, Amazon-like shape, and oracle metrics from the written p_true."""
import os
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from conftest import REPO
from interformer_fuxi.config import load_expid
from interformer_fuxi.errors import UserError
from interformer_fuxi.oracle import oracle_metrics, share_of_oracle

sys.path.insert(0, os.path.join(REPO, "data"))
import make_synthetic as syn  # noqa: E402

SMALL = dict(users=300, items=400, cates=12, history=10, rows=4000, groups=4)


def test_generator_is_seeded_and_amazon_shaped():
    a, b = syn.generate(**SMALL, seed=7), syn.generate(**SMALL, seed=7)
    for split in a:
        pd.testing.assert_frame_equal(a[split], b[split])
    assert not syn.generate(**SMALL, seed=8)["test"].equals(a["test"])
    df = pd.concat([a["train"], a["valid"], a["test"]])
    assert list(a["train"].columns[:7]) == ["label", "user_id", "item_id", "cate_id", "item_history",
                                            "cate_history", "user_group"]
    assert (df.groupby("item_id").cate_id.nunique() == 1).all()  # the category is a function of the item
    assert (df.groupby("user_id").size() >= 4).all()  # >= 5 events -> >= 4 rows with a history
    counts = df.groupby("user_id").size()
    assert counts.max() > 3 * counts.median()  # long-tailed activity
    assert set(df.label) == {0, 1} and df.p_true.between(0, 1).all()
    # chronology: a user's next history is this history + this row's item (newest last)
    user = a["train"][a["train"].user_id == a["train"].user_id.iloc[0]]
    for (_, r0), (_, r1) in zip(user.iloc[:-1].iterrows(), user.iloc[1:].iterrows()):
        expected = (r0.item_history.split("^") + [str(r0.item_id)])[-SMALL["history"]:]
        assert r1.item_history.split("^") == expected
    # every user's test rows come after its train rows
    last_train = a["train"].groupby("user_id").size()
    assert set(a["test"].user_id) == set(last_train.index)


def test_oracle_metrics_come_from_the_written_probabilities(tmp_path):
    shutil.copytree(os.path.join(REPO, "config"), tmp_path / "config")
    out = tmp_path / "data" / "synthetic_x1"
    syn.main(["--out", str(out), *[f"--{k}={v}" for k, v in SMALL.items()], "--seed", "3"])
    assert sorted(os.listdir(out)) == ["test.csv", "test_oracle.csv", "train.csv", "valid.csv", "valid_oracle.csv"]
    assert "p_true" not in open(out / "test.csv").readline()  # never a feature
    params = load_expid(tmp_path / "config", "InterFormer_synthetic")
    test = pd.read_csv(out / "test.csv")
    p = pd.read_csv(out / "test_oracle.csv").p_true
    oracle = oracle_metrics(params)
    assert oracle["AUC"] == pytest.approx(roc_auc_score(test.label, p))
    assert oracle["logloss"] == pytest.approx(log_loss(test.label, p), rel=1e-6)
    assert 0.75 < oracle["AUC"] < 0.95 and oracle["NE"] < 1
    shares = share_of_oracle({"AUC": 0.5 + (oracle["AUC"] - 0.5) / 2, "NE": 1.0}, oracle)
    assert shares == {"AUC": pytest.approx(0.5), "NE": 0.0}
    pd.DataFrame({"p_true": p[:-1]}).to_csv(out / "test_oracle.csv", index=False)
    with pytest.raises(UserError, match=f"{len(p) - 1} rows of p_true but {len(p)} rows"):
        oracle_metrics(params)


def test_the_runner_logs_the_oracle_beside_the_model(tmp_path):
    from interformer_fuxi.runner import run_expid
    shutil.copytree(os.path.join(REPO, "config"), tmp_path / "config")
    syn.main(["--out", str(tmp_path / "data" / "synthetic_x1"), *[f"--{k}={v}" for k, v in SMALL.items()]])
    run_expid(tmp_path / "config", "InterFormer_synthetic", overrides={"epochs": 1, "verbose": 0})
    log = open(tmp_path / "checkpoints" / "synthetic_x1" / "InterFormer_synthetic.log").read()
    assert "[Oracle] gAUC: " in log and "[Share of oracle] AUC: " in log
