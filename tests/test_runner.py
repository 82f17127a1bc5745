"""run_expid.py end to end and its user-facing errors, as subprocesses in a temp project."""
import os
import re
import subprocess
import sys

import pytest
import torch

from interformer_fuxi.config import dump_yaml, load_yaml
from interformer_fuxi.errors import UserError
from conftest import REPO, run_expid

METRIC_LINE = re.compile(r"\[Metrics\] gAUC: ([\d.]+) - AUC: ([\d.]+) - logloss: ([\d.]+) - NE: ([\d.]+)")


def edit_yaml(path, section, **changes):
    data = load_yaml(open(path))
    data[section].update(changes)
    dump_yaml(data, open(path, "w"), sort_keys=False)


def assert_user_error(result, *fragments, after_log=False):
    """Exit 2 and one ``error:`` line; nothing else on stderr unless the run had started logging."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    if not after_log:
        assert len(lines) == 1, result.stderr
    line = lines[-1]
    assert line.startswith("error: ") and "\n" not in line
    for fragment in fragments:
        assert fragment in line, line
    return line


def no_partial_build(project):
    processed = project / "data" / "processed"
    return not processed.exists() or os.listdir(processed) == []


def test_tiny_amazon_end_to_end(project):
    # a half-written directory left by an interrupted build must be rebuilt, not trusted
    stale = project / "data" / "processed" / "tiny_amazon"
    stale.mkdir(parents=True)
    (stale / "feature_map.json").write_text("{}")
    # --gpu 0 on a machine without CUDA runs on the CPU and says so
    result = run_expid(project / "config", "InterFormer_tiny", project / "work", "--gpu", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    if not torch.cuda.is_available():
        assert "--gpu 0 requested but CUDA is not available: running on CPU" in out
    metrics = METRIC_LINE.findall(out)
    assert len(metrics) == 2  # final validation and test evaluation
    gauc, auc, logloss, ne = map(float, metrics[-1])
    assert auc >= 0.65, out[-3000:]
    assert 0 < ne < 1 and 0 < logloss < 0.693 and 0.5 < gauc <= 1
    lines = open(project / "work" / "config.csv").read().splitlines()
    assert len(lines) == 1
    assert re.match(r" \d{8}-\d{6},\[command\] python .*run_expid.py .*--expid InterFormer_tiny.*,"
                    r"\[exp_id\] InterFormer_tiny,\[dataset_id\] tiny_amazon,\[train\] N\.A\.,"
                    r"\[val\] gAUC: [\d.]+ - AUC: [\d.]+ - logloss: [\d.]+ - NE: [\d.]+,"
                    r"\[test\] gAUC: [\d.]+ - AUC: ([\d.]+) - logloss: [\d.]+ - NE: [\d.]+$", lines[0])
    assert f"AUC: {auc:.6f}" in lines[0].split("[test]")[1]
    # logs and checkpoint under <model_root>/<dataset_id>/, as FuxiCTR does
    assert (project / "checkpoints" / "tiny_amazon" / "InterFormer_tiny.log").is_file()
    assert (project / "checkpoints" / "tiny_amazon" / "InterFormer_tiny.model").is_file()
    assert (project / "data" / "processed" / "tiny_amazon" / "feature_map.json").is_file()

    # the trained checkpoint renders its attention maps (Figure 4) to a PNG
    png = project / "work" / "maps.png"
    maps = subprocess.run([sys.executable, "-m", "interformer_fuxi.attention_maps", "--config",
                           str(project / "config"), "--expid", "InterFormer_tiny",
                           "--out", str(png)], cwd=project / "work", capture_output=True, text=True)
    assert maps.returncode == 0, maps.stderr[-3000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the built dataset's batches time a training step, with a model setting changed
    timing = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "model_size_and_speed.py"),
                             "--expid", "InterFormer_tiny", "--data", str(project / "data" / "processed" / "tiny_amazon"),
                             "--batch", "64", "--steps", "1", "--set", "dedup_sequence_tokens=false"],
                            cwd=project / "work", capture_output=True, text=True)
    assert timing.returncode == 0, timing.stderr[-3000:]
    assert re.search(r"distinct history id tuples per batch: ([\d.]+%, ){3}[\d.]+% of the positions", timing.stdout)
    assert re.search(r"train step at batch 64, .*tiny_amazon batches: \d+ ms median over 1", timing.stdout)


def test_unknown_expid_lists_the_available_ones(project):
    result = run_expid(project / "config", "InterFormer_tiyn", project / "work")
    line = assert_user_error(result, "unknown experiment id 'InterFormer_tiyn'", "InterFormer_tiny")
    assert "available" in line


def test_missing_data_file_names_key_and_path(project):
    os.remove(project / "data" / "tiny_amazon" / "valid.csv")
    result = run_expid(project / "config", "InterFormer_tiny", project / "work")
    assert_user_error(result, "valid_data", str(project / "data" / "tiny_amazon" / "valid.csv"))
    assert no_partial_build(project)


def test_missing_column_names_column_and_file_and_leaves_no_partial_build(project):
    test_csv = project / "data" / "tiny_amazon" / "test.csv"
    original = test_csv.read_text()
    test_csv.write_text(original.replace("cate_history", "cat_history", 1))
    result = run_expid(project / "config", "InterFormer_tiny", project / "work")
    assert_user_error(result, "'cate_history'", str(test_csv))
    assert no_partial_build(project)


def test_failed_build_is_rebuilt_by_the_next_run(project):
    # A numeric column that does not parse is stopped by the validator, before the build.
    ds = project / "config" / "dataset_config.yaml"
    data = load_yaml(open(ds))
    data["tiny_amazon"]["feature_cols"][4] = {"name": "cate_history", "active": True, "dtype": "float",
                                              "type": "numeric"}
    dump_yaml(data, open(ds, "w"), sort_keys=False)
    result = run_expid(project / "config", "InterFormer_tiny", project / "work")
    assert_user_error(result, "train.csv", "is not a finite number", "line 2:", after_log=True)
    assert no_partial_build(project)
    # A fill_na that FuxiCTR cannot cast passes the validator and fails inside the build:
    # nothing is left behind either.
    import pandas as pd
    for split in ("train", "valid", "test"):
        path = project / "data" / "tiny_amazon" / f"{split}.csv"
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        df["price"] = ["" if i % 7 == 0 else "1.5" for i in range(len(df))]
        df.to_csv(path, index=False)
    data = load_yaml(open(os.path.join(REPO, "config", "dataset_config.yaml")))
    data["tiny_amazon"]["feature_cols"].append({"name": "price", "dtype": "float", "type": "numeric",
                                                "fill_na": "unknown"})
    dump_yaml(data, open(ds, "w"), sort_keys=False)
    result = run_expid(project / "config", "InterFormer_tiny", project / "work")
    assert_user_error(result, "tiny_amazon", "building H5 from CSV failed", after_log=True)
    assert no_partial_build(project)


def test_unknown_model_lists_the_registered_ones(project):
    edit_yaml(project / "config" / "model_config.yaml", "InterFormer_tiny", model="InterFormr")
    result = run_expid(project / "config", "InterFormer_tiny", project / "work")
    assert_user_error(result, "unknown model 'InterFormr'", "did you mean 'InterFormer'", "InterFormer")


def test_unknown_key_names_it_and_the_closest_valid_one(project):
    edit_yaml(project / "config" / "model_config.yaml", "InterFormer_tiny", num_layer=4)
    result = run_expid(project / "config", "InterFormer_tiny", project / "work")
    assert_user_error(result, "unknown key 'num_layer'", "did you mean 'num_layers'")
    assert no_partial_build(project)


def test_unknown_dataset_key_names_it(project):
    edit_yaml(project / "config" / "dataset_config.yaml", "tiny_amazon", min_categ_count=2)
    result = run_expid(project / "config", "InterFormer_tiny", project / "work")
    assert_user_error(result, "tiny_amazon: unknown key 'min_categ_count' in dataset_config",
                      "did you mean 'min_categr_count'")


def test_unknown_metric_in_monitor(project):
    edit_yaml(project / "config" / "model_config.yaml", "InterFormer_tiny", monitor="gauc")
    result = run_expid(project / "config", "InterFormer_tiny", project / "work")
    assert_user_error(result, "unknown metric 'gauc'", "did you mean 'gAUC'")


def test_template_expid_explains_dataset_id(project):
    result = run_expid(project / "config", "InterFormer_default", project / "work")
    assert_user_error(result, "InterFormer_default", "template", "tiny_amazon")


def test_package_imports_from_another_working_directory(tmp_path):
    code = ("import interformer_fuxi, os; from interformer_fuxi import InterFormer; "
            "print(os.path.dirname(os.path.dirname(interformer_fuxi.__file__))); print(InterFormer.__name__)")
    env = dict(os.environ, PYTHONPATH="")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    root, name = out.stdout.split()
    assert os.path.realpath(root) == os.path.realpath(REPO) and name == "InterFormer"


def test_a_dataset_section_may_repeat_its_own_dataset_id_but_not_another(tmp_path):
    from interformer_fuxi.config import load_expid
    (tmp_path / "model_config.yaml").write_text("X:\n    model: InterFormer\n    dataset_id: d1\n")
    (tmp_path / "dataset_config.yaml").write_text("d1:\n    dataset_id: d1\n    data_root: r\n")
    assert load_expid(tmp_path, "X")["dataset_id"] == "d1"
    (tmp_path / "dataset_config.yaml").write_text("d1:\n    dataset_id: d2\n    data_root: r\n")
    with pytest.raises(UserError, match="dataset_config section d1: its dataset_id key says 'd2'"):
        load_expid(tmp_path, "X")
