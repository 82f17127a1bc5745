"""The BARS expids validate and build on correctly shaped rows; the tiny Taobao and KuaiVideo
schemas train end to end."""
import os
import shutil
import sys

import pandas as pd
import pytest
import torch

from conftest import REPO
from interformer_fuxi.config import dump_yaml, load_yaml
from interformer_fuxi.errors import UserError
from interformer_fuxi.runner import build_model, prepare, run_expid

sys.path.insert(0, os.path.join(REPO, "data"))
from make_tiny_bars import kuaivideo_rows, taobao_rows, write_visual_h5  # noqa: E402


def write_amazon(root):
    out = root / "data" / "Amazon" / "AmazonElectronics_x1"
    out.mkdir(parents=True)
    df = pd.read_csv(os.path.join(REPO, "data", "tiny_amazon", "train.csv"), dtype=str, keep_default_na=False)
    df.iloc[:300].to_csv(out / "train.csv", index=False)
    df.iloc[300:400].to_csv(out / "test.csv", index=False)


def write_taobao(root):
    out = root / "data" / "Taobao" / "TaobaoAd_x1"
    out.mkdir(parents=True)
    df, _ = taobao_rows(num_users=40, rows_per_user=8, max_history=60, seed=1)
    df.iloc[:250].to_csv(out / "train.csv", index=False)
    df.iloc[250:].to_csv(out / "test.csv", index=False)


def write_kuaivideo(root):
    out = root / "data" / "KuaiShou" / "KuaiVideo_x1"
    out.mkdir(parents=True)
    df, visual, _ = kuaivideo_rows(num_users=30, num_items=80, rows_per_user=8, max_history=30, dim=64, seed=1)
    df.iloc[:200].to_csv(out / "train.csv", index=False)
    df.iloc[200:].to_csv(out / "test.csv", index=False)
    write_visual_h5(str(out / "item_visual_emb_dim64.h5"), visual)


@pytest.fixture
def bars_project(tmp_path):
    shutil.copytree(os.path.join(REPO, "config"), tmp_path / "config")
    return tmp_path


def drop_md5(config_dir, dataset_id):
    path = config_dir / "dataset_config.yaml"
    data = load_yaml(open(path))
    del data[dataset_id]["md5"]
    dump_yaml(data, open(path, "w"), sort_keys=False)


@pytest.mark.parametrize("expid, dataset_id, writer, dim", [
    ("InterFormer_amazon", "amazonelectronics_x1", write_amazon, 64),
    ("InterFormer_taobao", "taobaoad_x1", write_taobao, 32),
    ("InterFormer_kuaivideo", "kuaivideo_x1", write_kuaivideo, 64),
])
def test_bars_expids_validate_and_build(bars_project, expid, dataset_id, writer, dim):
    from fuxictr.pytorch.dataloaders import H5DataLoader
    config = bars_project / "config"
    with pytest.raises(UserError, match="train_data file not found"):
        prepare(config, expid, log=False)
    writer(bars_project)
    # these are not BARS's files: the published md5 stops the build, and nothing is left behind
    with pytest.raises(UserError, match=r"train.csv: md5 [0-9a-f]{32} differs from"):
        prepare(config, expid, log=False)
    assert not (bars_project / "data" / "processed" / dataset_id).exists()
    drop_md5(config, dataset_id)
    params, feature_map, model_class = prepare(config, expid, log=False)
    features = feature_map.features
    assert params["embedding_dim"] == dim and params["batch_size"] == 2048
    assert features[params["group_id"]]["type"] == "meta"
    sequences = [f for f, s in features.items() if s["type"] == "sequence"]
    assert all("feature_encoder" not in features[f] for f in sequences)
    if dataset_id == "kuaivideo_x1":
        assert features["item_emb"]["freeze_emb"] and features["pos_items_emb"]["share_embedding"] == "item_emb"
    model = build_model(dict(params, verbose=0), feature_map, model_class)
    if dataset_id == "kuaivideo_x1":
        assert not model.feature_arch.embedding_layer.embedding_layers["item_emb"].weight.requires_grad
    loader = H5DataLoader(feature_map, stage="test", **dict(params, batch_size=64)).make_iterator()
    batch = next(iter(loader))
    model.eval()
    with torch.no_grad():
        y = model(batch)["y_pred"]
    assert y.shape[0] == min(64, len(loader.dataset)) and torch.all((y > 0) & (y < 1))


@pytest.fixture
def tiny_project(tmp_path):
    shutil.copytree(os.path.join(REPO, "config"), tmp_path / "config")
    for name in ("tiny_taobao", "tiny_kuaivideo"):
        shutil.copytree(os.path.join(REPO, "data", name), tmp_path / "data" / name)
    return tmp_path


@pytest.mark.parametrize("expid, min_auc", [("InterFormer_taobao_tiny", 0.68), ("InterFormer_kuaivideo_tiny", 0.75)])
def test_tiny_bars_schemas_train_end_to_end(tiny_project, expid, min_auc):
    params, model, valid, test = run_expid(tiny_project / "config", expid, overrides={"verbose": 0})
    assert test["AUC"] >= min_auc, test
    assert test["NE"] < 1.0, test
    fmap = model.feature_map.features
    if expid == "InterFormer_taobao_tiny":
        assert model.feature_arch.dense_fields == ["price"]
        assert len(model.feature_arch.sequence_fields) == 3
    else:
        assert "item_emb" in model.feature_arch.projections
        table = model.feature_arch.embedding_layer.embedding_layers["item_emb"].weight
        assert not table.requires_grad and fmap["item_emb"]["freeze_emb"]
