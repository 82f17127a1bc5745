"""The counting baselines: item means rank a user's rows, a user's mean cannot, bad input is one line."""
import os
import sys

import numpy as np
import pandas as pd

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import item_prior  # noqa: E402

from interformer_fuxi.metrics import group_auc  # noqa: E402


def split(seed, n_users=40, per_user=12, n_items=30):
    """Rows whose label is decided by the item alone (odd items click), with a history column."""
    rng = np.random.default_rng(seed)
    n = n_users * per_user
    item = rng.integers(1, n_items, n)
    return pd.DataFrame({"label": (item % 2).astype(float), "user_id": np.repeat(np.arange(n_users), per_user),
                         "item_id": item, "genre": item % 3, "item_history": "1^2"})


def write(root, name, frames):
    os.makedirs(root / name)
    for part, frame in frames.items():
        frame.to_csv(root / name / f"{part}.csv", index=False)


def test_item_means_rank_within_users_and_user_means_do_not(tmp_path):
    write(tmp_path, "d", {"train": split(0), "test": split(1)})
    train, test = (item_prior.read_split(str(tmp_path), "d", s) for s in ("train", "test"))
    assert "item_history" not in train.columns  # sequence columns are not fields here
    found = item_prior.scorers(train, test, ks=[0])
    y, users = test["label"].to_numpy(), test["user_id"].to_numpy()
    assert group_auc(y, found["item (k = 0)"], users) == 1.0
    assert group_auc(y, found["user (k = 5)"], users) == 0.5  # constant within a user
    p = item_prior.logistic_regression(train, test, ["user_id", "item_id", "genre"], lr=1e-1, epochs=20)
    assert group_auc(y, p, users) == 1.0


def test_a_missing_split_or_column_is_one_error_line(tmp_path, capsys):
    assert item_prior.main(["--dataset", "nope", "--data-root", str(tmp_path)]) == 2
    assert "nope/train.csv: not found" in capsys.readouterr().err
    write(tmp_path, "d", {"train": split(0).drop(columns="item_id"), "test": split(1)})
    assert item_prior.main(["--dataset", "d", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.csv: expected the columns label, user_id, item_id; missing item_id" in err[0]
