"""Seed ensembles: k-subset averages, their training seconds, the score cache's check and its errors."""
import json
import os
import sys

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import seed_ensembles as ens  # noqa: E402


def signal_and_noisy_runs(n_runs=3, n_users=80, per_user=20, seed=0):
    """Labels, users and runs that each see the label through their own independent noise."""
    rng = np.random.default_rng(seed)
    n = n_users * per_user
    y = rng.integers(0, 2, n).astype(float)
    user = np.repeat(np.arange(n_users).astype(str), per_user)
    runs = [1 / (1 + np.exp(-(y - 0.5 + rng.normal(0, 1.5, n)))) for _ in range(n_runs)]
    records = [dict(key=f"k{i}", seed=2024 + i, train_seconds_per_epoch=50.0 * (i + 1), epochs_trained=3,
                    machine=dict(torch_threads=2))
               for i in range(n_runs)]
    return y, user, runs, records


def test_k_rows_average_every_subset_and_sum_the_training_seconds():
    y, user, runs, records = signal_and_noisy_runs()
    table = ens.ensembles("M", records, runs, y, user)
    assert [(r["k"], r["subsets"]) for r in table] == [(1, 3), (2, 3), (3, 1)]
    singles = [ens.metrics(y, p, user) for p in runs]
    assert table[0]["gAUC"] == pytest.approx(np.mean([m["gAUC"] for m in singles]))
    assert table[0]["gAUC_range"] == [min(m["gAUC"] for m in singles), max(m["gAUC"] for m in singles)]
    assert table[0]["train_cpu_seconds"] == pytest.approx(600.0)  # 2 threads × 3 epochs × (50 + 100 + 150 s) / 3
    assert [r["train_cpu_seconds"] for r in table[1:]] == pytest.approx([1200.0, 1800.0])
    assert table[2]["gAUC"] == pytest.approx(ens.metrics(y, np.mean(runs, axis=0), user)["gAUC"])
    # independent errors average out: more seeds, better ranking and calibration
    assert table[0]["gAUC"] < table[1]["gAUC"] < table[2]["gAUC"]
    assert table[0]["AUC"] < table[2]["AUC"] and table[2]["logloss"] < table[0]["logloss"]


def test_copies_of_one_run_ensemble_to_that_run():
    y, user, runs, records = signal_and_noisy_runs(n_runs=1)
    table = ens.ensembles("M", records * 3, runs * 3, y, user)
    assert all(r["gAUC"] == pytest.approx(table[0]["gAUC"]) for r in table)


def write_cached_run(results_dir, key, gauc, p, y, user, seed=2024):
    os.makedirs(os.path.join(results_dir, "runs", key))
    np.savez(os.path.join(results_dir, "runs", key, "test_scores.npz"), p=p, y=y, user=user)
    record = dict(key=key, seed=seed, status="ok", dataset="d", train_seconds_per_epoch=10.0, epochs_trained=3,
                  test=dict(gAUC=gauc))
    with open(os.path.join(results_dir, f"{key}.json"), "w") as f:
        json.dump(record, f)
    return record


def test_cached_scores_are_checked_against_the_record(tmp_path):
    y, user, runs, _ = signal_and_noisy_runs(n_runs=1)
    true = ens.metrics(y, runs[0], user)["gAUC"]
    good = write_cached_run(str(tmp_path), "good", true, runs[0], y, user)
    p, y2, user2 = ens.test_scores(good, "config", str(tmp_path))
    assert np.array_equal(p, runs[0]) and np.array_equal(y2, y) and np.array_equal(user2, user)
    stale = write_cached_run(str(tmp_path), "stale", true + 0.01, runs[0], y, user)
    with pytest.raises(ens.UserError, match="stale.*not the record's"):
        ens.test_scores(stale, "config", str(tmp_path))


def test_a_run_on_other_test_rows_is_refused(tmp_path, capsys):
    y, user, runs, _ = signal_and_noisy_runs(n_runs=2)
    write_cached_run(str(tmp_path / "d"), "a", ens.metrics(y, runs[0], user)["gAUC"], runs[0], y, user)
    y_other = y.copy()
    y_other[:10] = 1 - y_other[:10]
    write_cached_run(str(tmp_path / "d"), "b", ens.metrics(y_other, runs[1], user)["gAUC"], runs[1], y_other, user)
    assert ens.main(["--dataset", "d", "--results", str(tmp_path), "--group", "M", "a", "b"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "run b" in err and len(err.splitlines()) == 1


def test_the_report_pairs_each_ensemble_with_the_other_models_seeds(tmp_path):
    y, user, runs, _ = signal_and_noisy_runs(n_runs=4)
    for i, key in enumerate("abcd"):
        write_cached_run(str(tmp_path / "d"), key, ens.metrics(y, runs[i], user)["gAUC"], runs[i], y, user, seed=2024 + i)
    assert ens.main(["--dataset", "d", "--results", str(tmp_path), "--group", "M", "a", "b",
                     "--group", "N", "c", "d"]) == 0
    result = json.load(open(tmp_path / "d" / "seed_ensembles.json"))
    assert [(p["A"], p["B"]) for p in result["pairs"]] == [
        ("M, 2-seed ensemble", "N seed 2026"), ("M, 2-seed ensemble", "N seed 2027"),
        ("N, 2-seed ensemble", "M seed 2024"), ("N, 2-seed ensemble", "M seed 2025"),
        ("M, 2-seed ensemble", "N, 2-seed ensemble")]
    assert os.path.getsize(tmp_path / "d" / "seed_ensembles.png") > 0


def test_a_group_without_runs_is_one_clear_line(tmp_path, capsys):
    assert ens.main(["--dataset", "d", "--results", str(tmp_path), "--group", "InterFormer"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--group" in err and len(err.splitlines()) == 1
