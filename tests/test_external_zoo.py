"""Models from a FuxiCTR checkout's model_zoo/ run under our configs, runner and metrics."""
import os

import yaml

from conftest import REPO, run_expid

ZOO = os.path.join(REPO, "tests", "fixtures", "fuxictr_zoo")

# Non-sequential FuxiCTR models need pooled sequences: the model config switches the
# dataset's `feature_encoder: null` back to FuxiCTR's masked mean pooling.
EXPID = {
    "PooledDNN_tiny": dict(
        model="PooledDNN", dataset_id="tiny_amazon", loss="binary_crossentropy",
        metrics=["gAUC", "AUC", "logloss", "NE"], task="binary_classification", optimizer="adam",
        learning_rate=3.0e-3, embedding_regularizer=0, net_regularizer=0, batch_size=128, embedding_dim=16,
        hidden_units=[64], epochs=3, shuffle=True, seed=2024, monitor="AUC", monitor_mode="max",
        feature_specs=[{"name": ["item_history", "cate_history"],
                        "feature_encoder": "layers.MaskedAveragePooling()"}]),
}


def add_expids(project, **extra):
    path = project / "config" / "model_config.yaml"
    configs = {name: dict(section, **extra) for name, section in EXPID.items()}
    configs["Broken_tiny"] = dict(EXPID["PooledDNN_tiny"], model="Broken")
    path.write_text(path.read_text() + "\n" + yaml.safe_dump(configs, sort_keys=False))


def test_a_zoo_model_trains_with_the_projects_protocol(project):
    add_expids(project)
    out = run_expid(project / "config", "PooledDNN_tiny", project / "work", "--model_zoo", ZOO)
    assert out.returncode == 0, out.stderr[-2000:]
    line = (project / "work" / "config.csv").read_text()
    assert "[exp_id] PooledDNN_tiny" in line and "NE: " in line  # NE exists only in this package's metrics
    test_auc = float(line.split("[test] ")[1].split("AUC: ")[2].split(" ")[0])
    assert test_auc > 0.6
    assert (project / "checkpoints" / "tiny_amazon" / "PooledDNN_tiny.model").exists()


def test_the_zoo_can_be_a_config_key_relative_to_the_project(project, tmp_path):
    import shutil
    shutil.copytree(ZOO, project / "zoo")
    add_expids(project, model_zoo="zoo", epochs=1)
    out = run_expid(project / "config", "PooledDNN_tiny", project / "work")
    assert out.returncode == 0, out.stderr[-2000:]


def test_zoo_errors_are_one_line(project, capsys, monkeypatch):
    from interformer_fuxi.runner import main
    add_expids(project)
    monkeypatch.chdir(project / "work")
    cases = {
        ("PooledDNN_tiny",): "model: unknown model 'PooledDNN'",  # no zoo given
        ("PooledDNN_tiny", "--model_zoo", str(project / "nowhere")): "is not a directory",
        ("Broken_tiny", "--model_zoo", ZOO): "importing",
    }
    for args, message in cases.items():
        assert main(["--config", str(project / "config"), "--expid", args[0], *args[1:]]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
        if len(args) == 1:
            assert "--model_zoo" in lines[0]  # says how to run FuxiCTR's own models
    assert not (project / "work" / "config.csv").exists()


def test_built_in_models_still_resolve_when_a_zoo_is_given():
    from interformer_fuxi.models import DIN
    from interformer_fuxi.registry import get_model
    assert get_model("DIN", ZOO) is DIN
    zoo_model = get_model("PooledDNN", ZOO)
    from interformer_fuxi.models.base import CTRModel
    assert issubclass(zoo_model, CTRModel) and zoo_model.__name__ == "PooledDNN"


def test_the_projects_own_model_zoo_folders_load_by_path_from_any_directory(tmp_path, monkeypatch):
    # The fuxictr wheel has its own top-level `model_zoo`; ours must not depend on import order.
    from interformer_fuxi import models
    from interformer_fuxi.registry import get_model
    monkeypatch.chdir(tmp_path)
    zoo = os.path.join(REPO, "model_zoo")
    for name in ["InterFormer", "DOT", "DCNv2", "DHEN", "WuKong", "DIN", "TransAct"]:
        assert get_model(name, zoo) is getattr(models, name)
