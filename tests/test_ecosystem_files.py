"""The ecosystem's files run here: BARS-style tuner yamls with ``!!python/tuple`` (expanded as
FuxiCTR's own ``autotuner.enumerate_params`` expands them), FuxiCTR/BARS config keys, the
package layouts of FuxiCTR v2.0.4's model_zoo, and BARS's relative data paths.

The configs below use the keys, tags and layouts found in BARS's published folders and
FuxiCTR v2.0.4's model folders (``benchmarks/bars_configs.py`` runs the real ones)."""
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, run_expid
from interformer_fuxi import runner
from interformer_fuxi.config import dump_yaml, load_expid, load_yaml
from interformer_fuxi.data import check_data_files
from interformer_fuxi.errors import UserError
from interformer_fuxi.external_zoo import available, locate, source_file
from interformer_fuxi.registry import get_model
from interformer_fuxi.tuner_config import enumerate_trials, load_tuner_config

LAYOUTS = os.path.join(REPO, "tests", "fixtures", "fuxictr_layouts")
TINY = os.path.join(REPO, "data", "tiny_amazon")

# A BARS tuner yaml in the form of BARS's DIN_amazonelectronics_x1_tuner_config_11.yaml: its
# own dataset section, FuxiCTR's tuple field groups, lists of lists. (No dataset key is tuned:
# FuxiCTR 2.0.4's enumerate_params then fails with KeyError 'model_id' on the second dataset
# combination; test_tuner.py tunes one here.)
BARS_TUNER_YAML = """\
base_config: ../
base_expid: DIN_tiny
dataset_id: tiny_amazon

dataset_config:
    tiny_amazon:
        data_root: data/processed/
        data_format: csv
        train_data: data/tiny_amazon/train.csv
        valid_data: data/tiny_amazon/test.csv # no validation split, as BARS
        test_data: data/tiny_amazon/test.csv
        min_categr_count: 1
        group_id: user_id
        feature_cols:
            - {name: user_id, active: True, dtype: int, type: meta, remap: False}
            - {name: item_id, active: True, dtype: str, type: categorical}
            - {name: cate_id, active: True, dtype: str, type: categorical}
            - {name: item_history, active: True, dtype: str, type: sequence, splitter: ^, max_len: 20,
               feature_encoder: "layers.MaskedAveragePooling()", share_embedding: item_id}
            - {name: cate_history, active: True, dtype: str, type: sequence, splitter: ^, max_len: 20,
               feature_encoder: "layers.MaskedAveragePooling()", share_embedding: cate_id}
        label_col: {name: label, dtype: float}

tuner_space:
    model_root: './checkpoints/DIN_tiny_amazon/'
    feature_specs: [[
            {name: item_history, feature_encoder: null},
            {name: cate_history, feature_encoder: null}
        ]]
    din_target_field: [!!python/tuple [item_id, cate_id]]
    din_sequence_field: [!!python/tuple [item_history, cate_history]]
    din_use_softmax: [True, False]
    attention_dropout: [0.2, 0.1]
    embedding_regularizer: 5.e-3
    metrics: [[gAUC, AUC, logloss]]
    monitor: {"gAUC": 1, "AUC": 1}
    epochs: 1
"""


def fuxictr_expansion(yaml_path):
    """``{expid: section}`` as FuxiCTR 2.0.4's enumerate_params writes it (run where FuxiCTR's
    tuner runs relative to base_config: the yaml's folder)."""
    code = ("import sys; from fuxictr import autotuner; print(autotuner.enumerate_params(sys.argv[1]))")
    out = subprocess.run([sys.executable, "-c", code, str(yaml_path)], cwd=os.path.dirname(yaml_path),
                         capture_output=True, text=True, check=True)
    folder = out.stdout.strip().splitlines()[-1]
    with open(os.path.join(folder, "model_config.yaml")) as f:
        expanded = yaml.load(f, Loader=yaml.FullLoader)
    shutil.rmtree(folder)
    return expanded


@pytest.mark.parametrize("inline_dataset", [True, False], ids=["inline_dataset", "base_config_dataset"])
def test_tuner_yaml_with_tuples_expands_into_fuxictrs_trials(project, inline_dataset):
    text = BARS_TUNER_YAML
    if not inline_dataset:  # the dataset section from base_config (FuxiCTR hashes its id in too)
        text = text[:text.index("dataset_config:")] + text[text.index("tuner_space:"):]
    models = load_yaml(open(project / "config" / "model_config.yaml"))
    models["Base"]["debug_mode"] = False  # FuxiCTR's Base has it; its enumerate_params needs it
    dump_yaml(models, open(project / "config" / "model_config.yaml", "w"), sort_keys=False)
    path = project / "config" / "tuner" / "DIN_tiny_tuner_config_01.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    theirs = fuxictr_expansion(path)
    trials = enumerate_trials(load_tuner_config(path))[0]
    # same trials, in the same order, with the same expids and dataset ids
    assert [t.expid for t in trials] == sorted(theirs, key=lambda e: int(e.split("_")[-2]))
    assert len(trials) == 2 * 2 and all(t.dataset_id == theirs[t.expid]["dataset_id"] for t in trials)
    assert len({t.dataset_id for t in trials}) == 1 and trials[0].dataset_id.startswith("tiny_amazon_")
    for t in trials:
        assert t.section["din_target_field"] == ("item_id", "cate_id")  # a tuple, as FuxiCTR reads it
        assert {k: t.section[k] for k in theirs[t.expid]} == theirs[t.expid]


def test_bars_tuner_yaml_runs_its_first_trial(project):
    path = project / "config" / "tuner" / "DIN_tiny_tuner_config_01.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(BARS_TUNER_YAML)
    cmd = [sys.executable, os.path.join(REPO, "run_param_tuner.py"), "--config", str(path), "--tag", "1"]
    out = subprocess.run(cmd, cwd=project / "work", capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    first = enumerate_trials(load_tuner_config(path))[0][0]
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"done   {first.expid}" in out.stdout
    line = open(project / "work" / "DIN_tiny_tuner_config_01.csv").read()
    assert f"[exp_id] {first.expid},[dataset_id] {first.dataset_id}," in line


def add_expid(project, name, **section):
    path = project / "config" / "model_config.yaml"
    models = load_yaml(open(path))
    models[name] = section
    dump_yaml(models, open(path, "w"), sort_keys=False)


def dot_tiny(project, **changes):
    models = load_yaml(open(project / "config" / "model_config.yaml"))
    return dict(models["DOT_tiny"], epochs=1, **changes)


def test_fuxictr_and_bars_keys_warn_once_each_and_the_run_goes_on(project):
    # keys of BARS's published configs and FuxiCTR 2.0.4's Base sections that nothing reads
    keys = dict(eval_interval=1, feature_config=None, debug_mode=False, pickle_feature_encoder=True,
                din_use_softmax=True)  # the last: a FuxiCTR model key that DOT does not read
    add_expid(project, "DOT_bars_keys", **dot_tiny(project, **keys))
    result = run_expid(project / "config", "DOT_bars_keys", project / "work")
    assert result.returncode == 0, result.stderr[-3000:]
    log = (project / "checkpoints" / "tiny_amazon" / "DOT_bars_keys.log").read_text()
    for key in keys:
        warnings = [l for l in log.splitlines() if f"WARNING DOT_bars_keys: key '{key}' in model_config" in l]
        assert len(warnings) == 1 and warnings[0].endswith("ignored"), key
    assert "[test] gAUC: " in (project / "work" / "config.csv").read_text()


def test_a_key_nothing_knows_is_still_an_error(project):
    add_expid(project, "DOT_typo", **dot_tiny(project, eval_step=1))
    result = run_expid(project / "config", "DOT_typo", project / "work")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: DOT_typo: unknown key 'eval_step' in model_config; "
                                     "did you mean 'eval_steps'? (model DOT does not read it)")


def test_former_fuxictr_names_are_read_under_the_current_ones(project):
    # FuxiCTR 2.0.1's ordered_features and BARS's FmFM configs' group_index
    add_expid(project, "DOT_old_names", **dot_tiny(project, ordered_features=["item_id", "item_history"],
                                                   group_index="item_id"))
    params = load_expid(project / "config", "DOT_old_names")
    # the dataset section's group_id wins over the model's group_index, as FuxiCTR merges them
    assert params["use_features"] == ["item_id", "item_history"] and params["group_id"] == "user_id"
    data = load_yaml(open(project / "config" / "dataset_config.yaml"))
    del data["tiny_amazon"]["group_id"]
    dump_yaml(data, open(project / "config" / "dataset_config.yaml", "w"), sort_keys=False)
    assert load_expid(project / "config", "DOT_old_names")["group_id"] == "item_id"


def test_models_are_found_in_every_fuxictr_package_layout():
    # <Folder>/model/ with two classes, <Folder>/<Folder>_torch/src/, a class unlike its folder
    expected = {"TwinDNN": "Twin/model/TwinDNN.py", "TwinWide": "Twin/model/TwinWide.py",
                "Nested": "Nested/Nested_torch/src/Nested.py", "Guest": "Host/model/Guest.py",
                "Host": "Host/model/Host.py"}
    for name, file in expected.items():
        model_class = get_model(name, LAYOUTS)  # the TensorFlow copy raises if imported
        assert model_class.__name__ == name
        assert source_file(model_class) == os.path.join(LAYOUTS, file)
    assert locate(LAYOUTS, "Nested").model_dir == os.path.join(LAYOUTS, "Nested", "Nested_torch")
    assert locate(LAYOUTS, "TwinWide").model_dir == os.path.join(LAYOUTS, "Twin")
    assert available(LAYOUTS) == ["Host", "Nested", "Twin"]
    with pytest.raises(UserError, match=r"fuxictr_layouts/Twin/model/__init__.py defines no class 'Twin'"):
        get_model("Twin", LAYOUTS)  # a folder name is not a class
    with pytest.raises(UserError, match=r"unknown model 'Gest'; did you mean 'Guest'.*fuxictr_layouts: Host, Nested"):
        get_model("Gest", LAYOUTS)


def bars_layout(root, config_parent):
    """A BARS published folder: its config folder in ``config_parent``, data paths relative to
    the directory BARS's instructions run from (``../data/...``), model_root ``./checkpoints/``."""
    config = config_parent / "Guest_tiny_amazon_tuner_config_01"
    config.mkdir(parents=True)
    dataset = {"data_root": "../data/Amazon/", "data_format": "csv",
               "train_data": "../data/Amazon/AmazonElectronics_x1/train.csv",
               "valid_data": "../data/Amazon/AmazonElectronics_x1/test.csv",
               "test_data": "../data/Amazon/AmazonElectronics_x1/test.csv", "group_id": "user_id",
               "feature_cols": load_yaml(open(os.path.join(REPO, "config", "dataset_config.yaml")))
               ["tiny_amazon"]["feature_cols"], "label_col": {"name": "label", "dtype": "float"}}
    models = load_yaml(open(os.path.join(REPO, "config", "model_config.yaml")))
    section = dict(models["DOT_tiny"], model="Guest", dataset_id="tiny_amazon_x1_0a1b2c3d", epochs=1,
                   model_root="./checkpoints/Guest_tiny_amazon/", eval_interval=1)
    dump_yaml({"tiny_amazon_x1_0a1b2c3d": dataset}, open(config / "dataset_config.yaml", "w"))
    dump_yaml({"Guest_tiny_amazon_x1_001_0a1b2c3d": section}, open(config / "model_config.yaml", "w"))
    return config, "Guest_tiny_amazon_x1_001_0a1b2c3d"


def put_data(data_parent):
    target = data_parent / "data" / "Amazon" / "AmazonElectronics_x1"
    target.mkdir(parents=True)
    for split in ("train", "test"):
        shutil.copy(os.path.join(TINY, f"{split}.csv"), target / f"{split}.csv")


def test_bars_paths_resolve_from_the_working_directory_and_the_fuxictr_model_folder(tmp_path, monkeypatch):
    zoo = tmp_path / "FuxiCTR" / "model_zoo"
    shutil.copytree(LAYOUTS, zoo)
    config, expid = bars_layout(tmp_path, tmp_path / "BARS" / "Guest_tiny_amazon_x1")
    work = tmp_path / "run"
    work.mkdir()
    monkeypatch.chdir(work)
    # nothing holds the data: the error names the rule and every absolute path tried
    params = load_expid(config, expid, model_zoo=str(zoo))
    with pytest.raises(UserError) as error:
        check_data_files(params)
    tried = [config.parent, work, zoo / "Host"]  # config folder's parent, working dir, FuxiCTR's folder
    assert str(error.value) == (
        "tiny_amazon_x1_0a1b2c3d: train_data file not found: "
        + " or ".join(str(base.parent / "data/Amazon/AmazonElectronics_x1/train.csv") for base in tried)
        + " (relative paths resolve against the first folder holding train_data or the built data, of: "
        f"{tried[0]} (the folder holding the config folder); {tried[1]} (the working directory); "
        f"{tried[2]} (the FuxiCTR model folder, where FuxiCTR's run_expid.py runs); none holds them)")
    # BARS's README: the working directory's ../data/ holds the data; every path goes there
    put_data(tmp_path)
    params = load_expid(config, expid, model_zoo=str(zoo))
    assert params["train_data"] == str(tmp_path / "data/Amazon/AmazonElectronics_x1/train.csv")
    assert params["data_root"] == str(tmp_path / "data/Amazon")
    assert params["model_root"] == str(work / "checkpoints/Guest_tiny_amazon")
    assert f"against {work} (the working directory)" in params["_path_rule"]
    # this project's layout wins where both hold the data: the config folder's parent first
    put_data(config.parent.parent)
    assert load_expid(config, expid)["train_data"] == str(config.parent.parent / "data/Amazon/AmazonElectronics_x1/train.csv")


def test_a_bars_folder_trains_from_the_directory_its_readme_runs_in(tmp_path):
    zoo = tmp_path / "FuxiCTR" / "model_zoo"
    shutil.copytree(LAYOUTS, zoo)
    config, expid = bars_layout(tmp_path, tmp_path / "BARS" / "Guest_tiny_amazon_x1")
    put_data(zoo)  # BARS: "cd FuxiCTR/model_zoo/<Model>", data in ../data/Amazon/
    work = zoo / "Host"
    result = run_expid(config, expid, work, "--model_zoo", zoo)
    assert result.returncode == 0, result.stderr[-3000:]
    log = work / "checkpoints" / "Guest_tiny_amazon" / "tiny_amazon_x1_0a1b2c3d" / f"{expid}.log"
    first = log.read_text().splitlines()[0]
    assert first.endswith(f"INFO Model: Guest from {zoo / 'Host' / 'model' / 'Guest.py'}")
    assert (zoo / "data" / "Amazon" / "tiny_amazon_x1_0a1b2c3d" / "train.h5").is_file()  # data_root too
    assert "[test] gAUC: " in (work / "Guest_tiny_amazon_tuner_config_01.csv").read_text()
