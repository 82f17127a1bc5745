"""run_param_tuner.py and the BARS export, end to end on tiny_amazon (CPU), plus their errors."""
import copy
import csv
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from interformer_fuxi.config import dump_yaml, load_yaml
from conftest import REPO

from interformer_fuxi import bars_export, tuner
from interformer_fuxi.config import load_expid
from interformer_fuxi.results import read_results
from interformer_fuxi.tuner_config import Trial, enumerate_trials, load_tuner_config, select_trials

# One epoch of a small InterFormer: each trial is a few seconds, mostly start-up.
TINY = dict(model="InterFormer", dataset_id="tiny_amazon", loss="binary_crossentropy",
            task="binary_classification", metrics=["gAUC", "AUC", "logloss"], optimizer="adam",
            learning_rate=3.0e-3, batch_size=256, embedding_dim=8, num_layers=1, num_heads=2,
            head_hidden_units=[32], epochs=1, seed=2024, monitor={"gAUC": 1, "AUC": 1},
            monitor_mode="max")


def make_project(root):
    shutil.copytree(os.path.join(REPO, "config"), root / "config")
    shutil.copytree(os.path.join(REPO, "data", "tiny_amazon"), root / "data" / "tiny_amazon")
    with open(root / "config" / "model_config.yaml", "a") as f:
        f.write("\n" + yaml.safe_dump({"InterFormer_tune": TINY}, default_flow_style=None, sort_keys=False))
    (root / "work").mkdir()
    return root


def write_tuner(root, name, space, **top):
    path = root / "config" / "tuner" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    body = {"base_config": "../", "base_expid": "InterFormer_tune", **top, "tuner_space": space}
    path.write_text(yaml.safe_dump(body, default_flow_style=None, sort_keys=False))
    return path


def run_tuner(cwd, *args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(REPO, "run_param_tuner.py"), *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def run_in(monkeypatch, capsys, cwd, main, *args):
    """``main(args)`` in-process from ``cwd`` (no second interpreter start): (rc, out, err)."""
    monkeypatch.chdir(cwd)
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A two-point grid over a dataset-level key, two trials at once on the CPU."""
    root = make_project(tmp_path_factory.mktemp("sweep"))
    # min_categr_count 200 drops about half the items to OOV: the two points score differently
    yaml_path = write_tuner(root, "tiny_tuner_config", {"min_categr_count": [200, 1], "embedding_dim": 8})
    result = run_tuner(root / "work", "--config", yaml_path, "--gpu", -1, -1)
    return root, yaml_path, result


def summary_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_sweep_runs_the_grid_and_ranks_it(sweep):
    root, yaml_path, result = sweep
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    # both slots busy at once: the two trials start before the first one ends
    assert out.index("start  InterFormer_tune_002_") < out.index("[1/2] done")
    results = read_results(root / "work" / "tiny_tuner_config.csv")
    assert len(results) == 2 and all(e.startswith("InterFormer_tune_00") for e in results)
    rows = summary_rows(root / "work" / "tiny_tuner_config_summary.csv")
    assert [r["rank"] for r in rows] == ["1", "2"]
    scores = [float(r["monitor"]) for r in rows]
    assert scores[0] > scores[1]  # best first
    for row in rows:
        val = results[row["exp_id"]]["val"]
        assert float(row["monitor"]) == pytest.approx(val["gAUC"] + val["AUC"], abs=2e-6)
        assert row["status"] == "done"
        assert float(row["test_AUC"]) == pytest.approx(results[row["exp_id"]]["test"]["AUC"], abs=1e-6)
    # the ranking follows the results CSV, whichever point of the grid wins
    best = max(results, key=lambda e: results[e]["val"]["gAUC"] + results[e]["val"]["AUC"])
    assert rows[0]["exp_id"] == best
    assert {r["min_categr_count"] for r in rows} == {"200", "1"}
    assert "All trials ranked by the validation monitor gAUC + AUC (max)" in out
    assert out.index(rows[0]["exp_id"], out.index("All trials ranked")) < out.index(
        rows[1]["exp_id"], out.index("All trials ranked"))
    # FuxiCTR's places: <model_root>/<dataset_id>/<expid>.{log,model}, the console next to them
    for row in rows:
        trial_dir = root / "checkpoints" / row["dataset_id"]
        for ext in (".log", ".model", ".out"):
            assert (trial_dir / (row["exp_id"] + ext)).is_file()
    # expanded configs next to the yaml, complete, no temporary files left
    expanded = root / "config" / "tuner" / "tiny_tuner_config"
    assert sorted(os.listdir(expanded)) == ["dataset_config.yaml", "model_config.yaml"]
    assert sorted(load_yaml(open(expanded / "model_config.yaml"))) == sorted(results)


def test_dataset_key_gets_one_data_folder_per_value(sweep):
    root, _, result = sweep
    assert result.returncode == 0
    datasets = load_yaml(open(root / "config" / "tuner" / "tiny_tuner_config" / "dataset_config.yaml"))
    assert len(datasets) == 2 and all(d.startswith("tiny_amazon_") for d in datasets)
    assert sorted(d["min_categr_count"] for d in datasets.values()) == [1, 200]
    built = sorted(os.listdir(root / "data" / "processed"))
    assert built == sorted(datasets)  # nothing built under the untuned id, nothing half-built
    vocab = {}
    for dataset_id, section in datasets.items():
        fmap = json.load(open(root / "data" / "processed" / dataset_id / "feature_map.json"))
        items = next(f["item_id"] for f in fmap["features"] if "item_id" in f)
        vocab[section["min_categr_count"]] = items["vocab_size"]
    assert vocab[200] < vocab[1]  # each trial really used its own data
    # each trial's section names its own dataset
    models = load_yaml(open(root / "config" / "tuner" / "tiny_tuner_config" / "model_config.yaml"))
    assert sorted(m["dataset_id"] for m in models.values()) == sorted(datasets)


def test_rerun_skips_finished_trials(sweep, monkeypatch, capsys):
    root, yaml_path, first = sweep
    assert first.returncode == 0
    lines = open(root / "work" / "tiny_tuner_config.csv").read().splitlines()
    rc, out, err = run_in(monkeypatch, capsys, root / "work", tuner.main, "--config", yaml_path, "--gpu", -1)
    assert rc == 0, err
    assert "2 selected, 2 already in" in out and "0 to run" in out
    assert "start " not in out
    assert open(root / "work" / "tiny_tuner_config.csv").read().splitlines() == lines
    assert len(summary_rows(root / "work" / "tiny_tuner_config_summary.csv")) == 2


def test_bars_export_folder(sweep, monkeypatch, capsys):
    root, yaml_path, result = sweep
    assert result.returncode == 0
    best = summary_rows(root / "work" / "tiny_tuner_config_summary.csv")[0]["exp_id"]
    for _ in range(2):  # a second export replaces the first
        rc, out, err = run_in(monkeypatch, capsys, root / "work", bars_export.main,
                              "--tuner-config", yaml_path, "--out-dir", root)
        assert rc == 0, err
    folder = root / "InterFormer_tiny_amazon"
    assert sorted(os.listdir(folder)) == sorted(["README.md", "environments.txt", "tiny_tuner_config.yaml",
                                                 "dataset_config.yaml", "model_config.yaml", "results.csv",
                                                 best + ".log"])
    assert not glob.glob(str(root / ".InterFormer_tiny_amazon*"))
    readme = (folder / "README.md").read_text()
    # the section layout of every BARS result README (e.g. BARS's DIN_amazonelectronics_x1)
    heads = [l for l in readme.splitlines() if l.startswith("#")]
    assert heads == ["## InterFormer_tiny_amazon", "### Environments", "### Dataset", "### Code",
                     "### Results", "### Logs"]
    assert "| [Environments](#Environments) | [Dataset](#Dataset) | [Code](#Code) | [Results](#Results) | " \
           "[Logs](#Logs) |" in readme
    assert "+ Hardware" in readme and "+ Software" in readme
    env = (folder / "environments.txt").read_text().strip().splitlines()
    assert env[-1].startswith("fuxictr: 2.0") and any(l.startswith("CPU: ") for l in env)
    assert env[-1] in readme
    # results: the chosen line verbatim and its test metrics in the table
    line = read_results(root / "work" / "tiny_tuner_config.csv")[best]
    assert (folder / "results.csv").read_text() == line["line"] + "\n"
    assert "| gAUC | AUC | logloss |" in readme
    assert "| " + " | ".join(f"{line['test'][m]:.6f}" for m in ("gAUC", "AUC", "logloss")) + " |" in readme
    assert f"--expid {best}" in readme
    # the log, inline and as a file
    log = (folder / (best + ".log")).read_text()
    assert log.splitlines()[-1] in readme and "[Metrics]" in log
    # the folder is a config dir in the repository root: its relative paths find the data
    params = load_expid(str(folder), best)
    assert params["train_data"] == str(root / "data" / "tiny_amazon" / "train.csv")
    swept = load_expid(str(root / "config" / "tuner" / "tiny_tuner_config"), best)
    assert params["dataset_id"] == swept["dataset_id"]
    assert params["min_categr_count"] == swept["min_categr_count"]  # the best trial's own data setting


def test_bars_export_folder_runs_again_unmodified_with_the_same_metrics(sweep, monkeypatch, capsys, tmp_path):
    root, yaml_path, result = sweep
    assert result.returncode == 0
    rc, out, err = run_in(monkeypatch, capsys, root / "work", bars_export.main,
                          "--tuner-config", yaml_path, "--out-dir", root / "exports")
    assert rc == 0, err
    folder = root / "exports" / "InterFormer_tiny_amazon"
    best = summary_rows(root / "work" / "tiny_tuner_config_summary.csv")[0]["exp_id"]
    elsewhere = tmp_path / "elsewhere"  # any working directory: the folder's paths do not depend on it
    elsewhere.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1")  # as the sweep ran (run_tuner)
    rerun = subprocess.run([sys.executable, os.path.join(REPO, "run_expid.py"), "--config", str(folder),
                            "--expid", best, "--gpu", "-1"], cwd=elsewhere, capture_output=True, text=True,
                           timeout=300, env=env)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    again = read_results(elsewhere / "InterFormer_tiny_amazon.csv")[best]
    exported = read_results(folder / "results.csv")[best]
    assert again["val"] == exported["val"] and again["test"] == exported["test"]


def test_export_errors(sweep, tmp_path, monkeypatch, capsys):
    root, yaml_path, _ = sweep
    rc, _, err = run_in(monkeypatch, capsys, root / "work", bars_export.main, "--tuner-config", yaml_path,
                        "--expid", "InterFormer_tune_009_deadbeef", "--out-dir", tmp_path)
    assert rc == 2 and err.startswith("error: --expid:") and err.count("\n") == 1
    rc, _, err = run_in(monkeypatch, capsys, tmp_path, bars_export.main, "--tuner-config", yaml_path)
    assert rc == 2 and "tiny_tuner_config.csv not found" in err  # no results CSV in that directory
    assert os.listdir(tmp_path) == []  # nothing half-written


def test_failing_trial_is_reported_and_the_other_finishes(tmp_path):
    root = make_project(tmp_path)
    yaml_path = write_tuner(root, "crash_tuner_config", {"interleave_mode": ["bogus", "int"]})
    result = run_tuner(root / "work", "--config", yaml_path, "--gpu", -1, -1)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    trials = enumerate_trials(load_tuner_config(yaml_path))[0]
    failed, good = [t.expid for t in trials]
    # a CSV dataset gets FuxiCTR's <dataset_id>_<hash> id, so the trials' own data folder
    assert trials[0].dataset_id.startswith("tiny_amazon_")
    out_path = root / "checkpoints" / trials[0].dataset_id / (failed + ".out")
    assert f"FAILED {failed} (cpu, exit 2): error: {failed}: interleave_mode must be one of" in result.stdout
    assert f"log: {out_path}" in result.stdout and "interleave_mode" in out_path.read_text()
    assert f"done   {good}" in result.stdout
    assert list(read_results(root / "work" / "crash_tuner_config.csv")) == [good]
    rows = summary_rows(root / "work" / "crash_tuner_config_summary.csv")
    assert [r["exp_id"] for r in rows] == [good, failed]
    assert rows[0]["rank"] == "1" and rows[1]["status"].startswith("failed") and rows[1]["monitor"] == ""


@pytest.mark.parametrize("body, fragment", [
    ({"base_config": "../", "tuner_space": {"num_layers": [1]}}, "base_expid is missing"),
    ({"base_config": "../", "base_expid": "InterFormer_tune", "tuner_space": {"num_layer": [1, 2]}},
     "unknown key 'num_layer' in tuner_space; did you mean 'num_layers'?"),
    ({"base_config": "../", "base_expid": "InterFormer_tune", "tuner_space": {"num_layers": []}},
     "tuner_space.num_layers is an empty list"),
    ({"base_config": "../", "base_expid": "InterFormer_tune"}, "tuner_space is missing or empty"),
    ({"base_config": "../", "base_expid": "InterFormer_tnue", "tuner_space": {"num_layers": [1]}},
     "base_expid 'InterFormer_tnue' is not in"),
    ({"base_config": "../", "base_expid": "InterFormer_tune", "tuner_spaec": {"num_layers": [1]}},
     "unknown top-level key 'tuner_spaec'; did you mean 'tuner_space'?"),
    ({"base_config": "../", "base_expid": "InterFormer_tune", "tuner_space": {"head_hidden_units": [64, 32]}},
     "tuner_space.head_hidden_units takes lists (head_hidden_units: [32] in the base config), so give a list"),
    ({"base_config": "../", "base_expid": "InterFormer_tune", "tuner_space": {"dataset_id": ["x"]}},
     "tuner_space.dataset_id cannot be tuned"),
])
def test_bad_tuner_yaml_is_one_line(tmp_path, capsys, body, fragment):
    root = make_project(tmp_path)
    path = root / "config" / "tuner" / "bad.yaml"
    path.write_text(yaml.safe_dump(body))
    assert tuner.main(["--config", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: ") and fragment in err, err
    assert not (root / "config" / "tuner" / "bad").exists()  # nothing written


def test_bad_tuner_yaml_exit_code(tmp_path):
    root = make_project(tmp_path)
    path = write_tuner(root, "bad", {"num_layers": []})
    result = run_tuner(root / "work", "--config", path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "empty list" in result.stderr


def test_tags_select_exactly_and_expids_are_stable(tmp_path, capsys):
    root = make_project(tmp_path)
    path = write_tuner(root, "grid", {"learning_rate": [1.e-1, 1.e-2, 1.e-3], "num_heads": [1, 2, 4, 8]})
    trials, datasets = enumerate_trials(load_tuner_config(path))
    # model keys keep one dataset, named as FuxiCTR names a CSV dataset of a grid
    assert len(trials) == 12 and len(datasets) == 1 and list(datasets)[0].startswith("tiny_amazon_")
    assert [t.index for t in select_trials(trials, ["1"])] == [1]  # not 10, 11, 12
    assert [t.index for t in select_trials(trials, ["011", trials[2].hash, trials[4].expid])] == [3, 5, 11]
    assert trials[10].tuned == {"learning_rate": 1.e-3, "num_heads": 4}
    # same yaml, same expids (resume relies on it); a changed value changes only its trials
    assert [t.expid for t in enumerate_trials(load_tuner_config(path))[0]] == [t.expid for t in trials]
    write_tuner(root, "grid", {"learning_rate": [1.e-1, 1.e-2, 3.e-3], "num_heads": [1, 2, 4, 8]})
    changed = enumerate_trials(load_tuner_config(path))[0]
    assert [a.expid == b.expid for a, b in zip(trials, changed)] == [True] * 8 + [False] * 4
    assert tuner.main(["--config", str(path), "--tag", "13", "--dry-run"]) == 2
    assert "--tag: '13' matches no trial" in capsys.readouterr().err
    assert tuner.main(["--config", str(path), "--tag", "2", "--dry-run"]) == 0
    listed = [l for l in capsys.readouterr().out.splitlines() if l.startswith("InterFormer_tune_")]
    assert len(listed) == 1 and listed[0].startswith(trials[1].expid)


def test_bars_tuner_configs_expand(tmp_path):
    """The four BARS tuner yamls against stand-ins for their base expids and datasets."""
    shutil.copytree(os.path.join(REPO, "config"), tmp_path / "config")
    models = load_yaml(open(tmp_path / "config" / "model_config.yaml"))
    datasets = load_yaml(open(tmp_path / "config" / "dataset_config.yaml"))
    bases = {"amazonelectronics_x1": "InterFormer_amazon", "taobaoad_x1": "InterFormer_taobao",
             "kuaivideo_x1": "InterFormer_kuaivideo", "movielens1m_x1": "InterFormer_movielens1m"}
    for dataset_id, expid in bases.items():
        models.setdefault(expid, dict(models["InterFormer_default"], dataset_id=dataset_id))
        datasets.setdefault(dataset_id, copy.deepcopy(datasets["tiny_amazon"]))
    dump_yaml(models, open(tmp_path / "config" / "model_config.yaml", "w"))
    dump_yaml(datasets, open(tmp_path / "config" / "dataset_config.yaml", "w"))
    for dataset_id in bases:
        cfg = load_tuner_config(tmp_path / "config" / "tuner" / f"InterFormer_{dataset_id}_tuner_config.yaml")
        trials, data = enumerate_trials(cfg)
        assert len(trials) == 3 * 4 * 2 * 3 * 3 and len(data) == 1 and list(data)[0].startswith(dataset_id + "_")
        assert sorted({t.section["learning_rate"] for t in trials}) == [1e-3, 1e-2, 1e-1]
        assert sorted({t.section["num_heads"] for t in trials}) == [1, 2, 4, 8]
        first = trials[0].section
        assert first["monitor"] == {"gAUC": 1, "AUC": 1} and first["monitor_mode"] == "max"
        assert first["metrics"] == ["gAUC", "AUC", "logloss", "NE"] and first["seed"] == 20222023
        assert first["model_root"] == f"checkpoints/InterFormer_{dataset_id}/"


def test_results_table_with_seeds():
    section = {"model": "InterFormer", "lr": 1, "monitor": "AUC", "monitor_mode": "max"}
    trials = [Trial(i, f"X_{i:03d}_abc", "d", dict(section, seed=s), {"seed": s})
              for i, s in enumerate((1, 2, 3), start=1)]
    other = Trial(4, "X_004_abc", "d", dict(section, lr=2, seed=1), {})
    aucs = (0.70, 0.72, 0.74)
    results = {t.expid: {"val": {"AUC": a}, "test": {"AUC": a, "logloss": 0.5}} for t, a in zip(trials, aucs)}
    results[other.expid] = {"val": {"AUC": 0.6}, "test": {"AUC": 0.6, "logloss": 0.6}}
    # the best point by validation AUC, with its seed siblings (not the other setting)
    best, runs = bars_export.choose_runs(type("Cfg", (), {"path": "t.yaml"}), trials + [other], results)
    assert best is trials[2] and [t.index for t in runs] == [3, 1, 2]
    trials = sorted(runs, key=lambda t: t.index)
    table, split = bars_export.results_table(trials, results)
    lines = table.splitlines()
    assert split == "test" and lines[0] == "| run | seed | AUC | logloss |"
    assert lines[2] == "| X_001_abc | 1 | 0.700000 | 0.500000 |"
    assert lines[-2] == "| Avg | | 0.720000 | 0.500000 |"
    assert lines[-1] == f"| Std | | {0.0163299:.6f} | 0.000000 |"


def test_a_device_group_trains_each_trial_data_parallel(tmp_path):
    """``--gpu -1,-1``: one slot of two CPU processes; each trial runs under torchrun and its
    result line names the launch."""
    root = make_project(tmp_path)
    yaml_path = write_tuner(root, "group_tuner", {"learning_rate": [3.0e-3]})
    result = run_tuner(root / "work", "--config", yaml_path, "--gpu", "-1,-1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "on cpu x2 processes" in result.stdout
    (line,) = (root / "work" / "group_tuner.csv").read_text().splitlines()
    assert "[command] torchrun --nnodes 1 --nproc_per_node 2" in line


@pytest.mark.parametrize("text", ["0,x", "0,-1"])
def test_a_bad_device_group_is_one_line(text, capsys):
    with pytest.raises(SystemExit):
        tuner.parse_args(["--config", "x.yaml", "--gpu", text])
    err = capsys.readouterr().err.strip().splitlines()
    assert repr(text) in err[-1]
