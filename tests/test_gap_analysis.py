"""The gap analysis' paired comparison: per-user AUCs, the bootstrap interval and the slices."""
import os
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import gap_analysis as gap  # noqa: E402

from interformer_fuxi.metrics import group_auc, group_aucs  # noqa: E402


def rows_and_labels(n_users=60, per_user=20, seed=0):
    rng = np.random.default_rng(seed)
    n = n_users * per_user
    rows = pd.DataFrame({"label": rng.integers(0, 2, n).astype(float),
                         "user": np.repeat(np.arange(n_users), per_user),
                         "history_length": rng.integers(1, 100, n),
                         "item_rows": rng.integers(0, 500, n),
                         "genre_share": rng.random(n)})
    return rows, rng


def test_group_aucs_are_the_terms_of_gauc():
    y = np.array([0, 0, 1, 1, 0, 1, 1, 1], dtype=float)
    p = np.array([0.1, 0.2, 0.8, 0.9, 0.9, 0.1, 0.3, 0.4])
    g = np.array(["a", "a", "a", "a", "b", "b", "c", "c"])  # c holds one class: left out
    stats = group_aucs(y, p, g)
    assert list(stats.index) == ["a", "b"]
    assert stats.loc["a", "auc"] == 1.0 and stats.loc["b", "auc"] == 0.0
    assert list(stats["n"]) == [4, 2]
    assert group_auc(y, p, g) == pytest.approx(4 / 6)


def test_identical_models_have_no_gap():
    rows, rng = rows_and_labels()
    p = rng.random(len(rows))
    result = gap.analyse(rows, p, p.copy())
    assert result["all"]["diff"] == 0 and result["all"]["low"] == 0 and result["all"]["high"] == 0
    assert all(c["diff"] == 0 for c in result["slices"] if c.get("users"))


def test_a_better_model_shows_a_gap_beyond_its_interval_and_in_the_slice_it_wins():
    rows, rng = rows_and_labels()
    y = rows["label"].to_numpy()
    noise = rng.random(len(rows))
    long = rows["history_length"].to_numpy() >= 50
    p_a = noise
    p_b = np.where(long, 0.5 * y + noise, noise)  # B knows the label on long histories only
    result = gap.analyse(rows, p_a, p_b, seed=1)
    assert result["all"]["low"] > 0
    cells = {c["bucket"]: c for c in result["slices"] if c["slicing"] == "history length"}
    assert cells["1–24"]["diff"] == 0 and cells["25–49"]["diff"] == 0
    assert cells["50–99"]["low"] > 0 and cells["100 (capped)"]["rows"] == 0
    assert sum(c["rows"] for c in cells.values()) == int((rows["history_length"] >= 1).sum())
    # the table names the sliced buckets and stars the intervals that exclude 0
    text = gap.markdown(result, "A", "B")
    assert "| history length | 50–99 |" in text and "*" in text.split("| history length | 50–99 |")[1].split("\n")[0]


def test_the_bootstrap_is_deterministic_under_its_seed():
    rows, rng = rows_and_labels()
    p_a, p_b = rng.random(len(rows)), rng.random(len(rows))
    one, two = gap.analyse(rows, p_a, p_b, seed=3), gap.analyse(rows, p_a, p_b, seed=3)
    assert one["all"] == two["all"] and one["slices"] == two["slices"]


def test_a_missing_record_is_one_clear_line(tmp_path, capsys):
    assert gap.main(["--dataset", "x", "--runs", "nokey", "other", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nokey" in err and len(err.splitlines()) == 1
