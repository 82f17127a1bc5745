"""The streaming CSV -> H5 build gives FuxiCTR 2.0.4's output: feature_map.json, the
vocabularies, the processor and every H5 array, on the embedded datasets and on small CSVs
with each preprocessing option; the chunk size does not change it; bad input stops with one
line and leaves nothing behind."""
import glob
import json
import os
import pickle

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from interformer_fuxi.config import load_yaml
from interformer_fuxi.data import build_h5
from interformer_fuxi.errors import UserError
from interformer_fuxi.csv_chunks import pad_ids, tokenize
from interformer_fuxi.stream_build import build_streaming, unpack

CONFIG = load_yaml(open(os.path.join(REPO, "config", "dataset_config.yaml")))


def dataset(dataset_id, root, **overrides):
    """A dataset section with absolute paths, built under ``root``."""
    params = dict(CONFIG[dataset_id], dataset_id=dataset_id, data_root=str(root))
    for key in ("train_data", "valid_data", "test_data"):
        params[key] = os.path.join(REPO, params[key])
    params["feature_cols"] = [dict(c, pretrained_emb=os.path.join(REPO, c["pretrained_emb"]))
                              if "pretrained_emb" in c else c for c in params["feature_cols"]]
    params.update(overrides)
    return params


def build_both(params, tmp_path, **streaming):
    """Build ``params`` with FuxiCTR's builder and the streaming one; their folders."""
    dirs = []
    for build, extra in (("fuxictr", {}), ("streaming", streaming)):
        p = dict(params, data_root=str(tmp_path / build), build=build, **extra)
        build_h5(p)
        dirs.append(os.path.join(p["data_root"], p["dataset_id"]))
    return dirs


def h5_arrays(path):
    with h5py.File(path, "r") as hf:
        return {k: hf[k][:] for k in hf}


def assert_same_build(a, b, float_rtol=0.0):
    """feature_map.json, feature_vocab.json, pretrained_emb.h5, every split's arrays (dtypes
    too) and the pickled processors' tokenizers of two build folders are equal."""
    for name in ("feature_map.json", "feature_vocab.json"):
        assert open(os.path.join(a, name), "rb").read() == open(os.path.join(b, name), "rb").read(), name
    files_a = sorted(os.path.relpath(f, a) for f in glob.glob(os.path.join(a, "**", "*.h5"), recursive=True))
    files_b = sorted(os.path.relpath(f, b) for f in glob.glob(os.path.join(b, "**", "*.h5"), recursive=True))
    assert files_a == files_b
    for rel in files_a:
        arr_a, arr_b = h5_arrays(os.path.join(a, rel)), h5_arrays(os.path.join(b, rel))
        assert list(arr_a) == list(arr_b) or sorted(arr_a) == sorted(arr_b), rel
        for key in arr_a:
            assert arr_a[key].dtype == arr_b[key].dtype, (rel, key)
            assert arr_a[key].shape == arr_b[key].shape, (rel, key)
            if arr_a[key].dtype.kind == "f" and float_rtol:
                np.testing.assert_allclose(arr_a[key], arr_b[key], rtol=float_rtol, atol=float_rtol,
                                           err_msg=f"{rel}:{key}")
            else:
                np.testing.assert_array_equal(arr_a[key], arr_b[key], err_msg=f"{rel}:{key}")
    proc_a, proc_b = (pickle.load(open(os.path.join(d, "feature_processor.pkl"), "rb")) for d in (a, b))
    assert type(proc_a) is type(proc_b)
    assert proc_a.data_dir == a and proc_b.data_dir == b
    assert sorted(proc_a.processor_dict) == sorted(proc_b.processor_dict)
    for key, obj_a in proc_a.processor_dict.items():
        obj_b = proc_b.processor_dict[key]
        assert type(obj_a) is type(obj_b), key
        if key.endswith("::tokenizer"):
            assert obj_a.vocab == obj_b.vocab, key
            for attr in ("max_len", "padding", "_splitter", "_na_value", "_min_freq", "remap"):
                assert getattr(obj_a, attr) == getattr(obj_b, attr), (key, attr)
    assert proc_a.feature_map.features == proc_b.feature_map.features
    return proc_a, proc_b


@pytest.mark.parametrize("dataset_id", ["tiny_amazon", "tiny_taobao", "tiny_kuaivideo"])
def test_embedded_datasets_build_as_fuxictr(dataset_id, tmp_path):
    fuxictr_dir, stream_dir = build_both(dataset(dataset_id, tmp_path), tmp_path, chunk_rows=500)
    assert_same_build(fuxictr_dir, stream_dir)


def test_movielens_layout_builds_as_fuxictr(tmp_path):
    """The MovieLens schema (first rows of the committed subset when present, else generated)."""
    src = os.path.join(REPO, "data", "movielens1m_x1_u1000", "train.csv")
    if os.path.isfile(src):
        df = pd.read_csv(src, nrows=900, dtype=str, keep_default_na=False)
    else:
        rng = np.random.default_rng(3)
        hist = [("^".join(map(str, rng.integers(1, 300, rng.integers(0, 30))))) for _ in range(900)]
        df = pd.DataFrame({"label": rng.integers(0, 2, 900), "user_id": rng.integers(1, 50, 900),
                           "item_id": rng.integers(1, 300, 900), "gender": rng.choice(["M", "F"], 900),
                           "age": rng.integers(1, 7, 900), "occupation": rng.integers(0, 20, 900),
                           "zip": rng.integers(10000, 10100, 900), "genre": rng.choice(["Drama", "Comedy"], 900),
                           "year": rng.integers(1950, 2000, 900), "item_history": hist,
                           "genre_history": [h and "Drama" for h in hist]})
    for name, part in (("train", df.iloc[:600]), ("valid", df.iloc[600:750]), ("test", df.iloc[750:])):
        part.to_csv(tmp_path / f"{name}.csv", index=False)
    params = dict(CONFIG["movielens1m_x1_u1000"], dataset_id="ml", train_data=str(tmp_path / "train.csv"),
                  valid_data=str(tmp_path / "valid.csv"), test_data=str(tmp_path / "test.csv"))
    assert_same_build(*build_both(params, tmp_path, chunk_rows=77))


def options_csvs(tmp_path, rows=240, seed=0, empty_elements=False):
    """Train/valid/test CSVs exercising NA cells, rare values, long and empty sequences
    (``empty_elements``: some ``a^^b``, which the validator rejects)."""
    rng = np.random.default_rng(seed)
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in (("train", rows), ("valid", rows // 3), ("test", rows // 3)):
        lengths = rng.integers(0, 9, n)
        seq = np.array(["^".join(f"i{v}" for v in rng.integers(0, 40, k)) for k in lengths], dtype=object)
        if empty_elements:
            seq[rng.random(n) < 0.05] = "i1^^i2"  # an empty element: a padding token
        df = pd.DataFrame({
            "label": rng.integers(0, 2, n),
            "uid": rng.integers(1, 30, n),
            "item": np.char.add("i", rng.integers(0, 60, n).astype(str)),
            "cate": np.where(rng.random(n) < 0.1, "", np.char.add("c", rng.integers(0, 8, n).astype(str))),
            "price": np.round(rng.lognormal(3, 1, n), 2),
            "hist": seq,
            "cate_hist": np.where(lengths > 0, "c1^c2", ""),
            "num_id": rng.integers(0, 50, n),
        })
        path = tmp_path / f"{split}.csv"
        df.to_csv(path, index=False)
        paths[split + "_data"] = str(path)
    return paths


def options_params(tmp_path, empty_elements=False, **overrides):
    params = dict(dataset_id="opts", data_root=str(tmp_path), min_categr_count=2, group_id="uid",
                  **options_csvs(tmp_path, empty_elements=empty_elements))
    params["feature_cols"] = [
        {"name": "uid", "active": True, "dtype": "int", "type": "meta"},  # remapped: valid/test ids appended
        {"name": "gid", "active": True, "dtype": "int", "type": "meta", "preprocess": "copy_from(uid)", "remap": False},
        {"name": ["item", "cate"], "active": True, "dtype": "str", "type": "categorical"},
        {"name": "num_id", "active": True, "dtype": "str", "type": "categorical", "remap": False, "min_categr_count": 3},
        {"name": "price", "active": True, "dtype": "float", "type": "numeric", "normalizer": "MinMaxScaler"},
        {"name": "hist", "active": True, "dtype": "str", "type": "sequence", "splitter": "^", "max_len": 5,
         "padding": "post", "share_embedding": "item", "feature_encoder": None},
        {"name": "hist_pre", "active": True, "dtype": "str", "type": "sequence", "splitter": "^", "max_len": 6,
         "padding": "pre", "preprocess": "copy_from(hist)", "min_categr_count": 1},
        {"name": "hist_auto", "active": True, "dtype": "str", "type": "sequence", "splitter": "^",
         "preprocess": "copy_from(hist)"},  # no max_len: the longest train row; default pooling encoder
        {"name": "cate_hist", "active": True, "dtype": "str", "type": "sequence", "splitter": "^", "max_len": 3,
         "share_embedding": "cate", "feature_encoder": None},
        {"name": "unused", "active": False, "dtype": "str", "type": "categorical", "preprocess": "copy_from(item)"},
    ]
    params["label_col"] = {"name": "label", "dtype": "float"}
    params.update(overrides)
    return params


def one_pass(params):
    """Every sequence with a max_len: the streaming build reads the train file once."""
    params["feature_cols"] = [dict(c, max_len=7) if c["type"] == "sequence" and not c.get("max_len") else c
                              for c in params["feature_cols"]]
    return params


@pytest.mark.parametrize("passes", [1, 2])
def test_options_build_as_fuxictr(tmp_path, passes):
    params = options_params(tmp_path / "csv")
    params = one_pass(params) if passes == 1 else params
    fuxictr_dir, stream_dir = build_both(params, tmp_path, chunk_rows=7)
    proc, _ = assert_same_build(fuxictr_dir, stream_dir)
    vocab = proc.processor_dict["item::tokenizer"].vocab
    assert vocab is proc.processor_dict["hist::tokenizer"].vocab  # one shared dict
    assert "i1" in vocab and len(proc.processor_dict["uid::tokenizer"].vocab) > 3


def test_standard_scaler_and_chunk_size(tmp_path):
    """Numeric normalisation: StandardScaler's incremental fit equals FuxiCTR's to rounding;
    everything else is bit-equal for any chunk size."""
    params = one_pass(options_params(tmp_path / "csv"))
    params["feature_cols"][4] = dict(params["feature_cols"][4], normalizer="StandardScaler")
    fuxictr_dir, stream_dir = build_both(params, tmp_path, chunk_rows=7)
    assert_same_build(fuxictr_dir, stream_dir, float_rtol=1e-12)
    whole = dict(params, data_root=str(tmp_path / "whole"), build="streaming", chunk_rows=10 ** 6)
    build_h5(whole)
    assert_same_build(stream_dir, os.path.join(whole["data_root"], "opts"), float_rtol=1e-12)


def test_pretrained_emb_and_fill_na(tmp_path):
    """pretrained_emb extends the vocabulary with its keys (not frozen: random rows, zero
    padding row); fill_na of a string column is the NA token of its vocabulary."""
    params = options_params(tmp_path / "csv")
    table = tmp_path / "emb.h5"
    with h5py.File(table, "w") as hf:
        keys = np.array([f"i{k}" for k in (3, 1, 999, 3, 77)], dtype="S")  # a repeated key, unseen ones
        hf.create_dataset("key", data=keys)
        hf.create_dataset("value", data=np.arange(20, dtype=np.float32).reshape(5, 4))
    params["feature_cols"].append({"name": "item_emb", "active": True, "dtype": "str", "type": "categorical",
                                   "preprocess": "copy_from(item)", "pretrained_emb": str(table),
                                   "freeze_emb": False, "embedding_dim": 4, "min_categr_count": 1})
    params["feature_cols"][2] = dict(params["feature_cols"][2], fill_na="c0")
    dirs = []
    for build in ("fuxictr", "streaming"):
        np.random.seed(7)  # the unfrozen table's random rows
        p = dict(params, data_root=str(tmp_path / build), build=build, chunk_rows=11)
        build_h5(p)
        dirs.append(os.path.join(p["data_root"], "opts"))
    proc, _ = assert_same_build(*dirs)
    vocab = proc.processor_dict["item_emb::tokenizer"].vocab
    assert "i999" in vocab and "i77" in vocab  # FuxiCTR's bytes -> str cast of the keys
    emb = h5_arrays(os.path.join(dirs[1], "pretrained_emb.h5"))["item_emb"]
    np.testing.assert_array_equal(emb[vocab["i3"]], np.arange(12, 16))  # the last row of a repeated key
    assert not emb[0].any()


@pytest.mark.parametrize("passes", [1, 2])
def test_blocks_in_fuxictr_layout(tmp_path, passes):
    """data_block_size: <split>/part_<k>.h5 of that many rows, as FuxiCTR's build_dataset
    writes them (without the remapped meta column, which FuxiCTR numbers per block); built
    without the validator, on sequences with empty elements (padding tokens in FuxiCTR)."""
    from fuxictr.preprocess import build_dataset
    from interformer_fuxi.fuxictr_processor import SourceFirstFeatureProcessor

    params = options_params(tmp_path / "csv", empty_elements=True, data_block_size=50)
    params = one_pass(params) if passes == 1 else params
    params["feature_cols"][0] = dict(params["feature_cols"][0], remap=False)
    ref = dict(params, data_root=str(tmp_path / "fuxictr"))
    processor = SourceFirstFeatureProcessor(**ref)
    build_dataset(processor, **ref)
    build_streaming(dict(params, data_root=str(tmp_path / "streaming")), params, chunk_rows=13)
    a, b = os.path.join(ref["data_root"], "opts"), os.path.join(tmp_path, "streaming", "opts")
    assert sorted(os.listdir(os.path.join(b, "train"))) == [f"part_{k}.h5" for k in range(5)]
    for rel in ("train/part_4.h5", "valid/part_1.h5", "test/part_0.h5"):
        assert len(h5_arrays(os.path.join(b, rel))["label"]) == {"train/part_4.h5": 40, "valid/part_1.h5": 30}.get(rel, 50)
    for name in ("feature_map.json", "feature_vocab.json"):
        assert json.load(open(os.path.join(a, name))) == json.load(open(os.path.join(b, name)))
    for rel in glob.glob("*/part_*.h5", root_dir=a):
        arr_a, arr_b = h5_arrays(os.path.join(a, rel)), h5_arrays(os.path.join(b, rel))
        assert sorted(arr_a) == sorted(arr_b)
        for key in arr_a:
            np.testing.assert_array_equal(arr_a[key], arr_b[key], err_msg=f"{rel}:{key}")


@pytest.mark.parametrize("long_token", ["", "abcdefghijk"])  # packed bytes / Python strings
def test_tokens_and_padding(long_token):
    values = np.array(["a^b^c", "", "d", "e^", "é^f", "^", long_token], dtype=object)
    codes, uniques, lengths = tokenize(values, "^")
    uniques = unpack(uniques) if uniques.dtype == np.uint64 else uniques
    tail = [long_token] if long_token else []
    assert uniques[codes].tolist() == ["a", "b", "c", "d", "e", "", "é", "f", "", ""] + tail
    assert lengths.tolist() == [3, 0, 1, 2, 2, 2, len(tail)]
    assert len(set(uniques.tolist())) == len(uniques)
    codes, uniques, lengths = tokenize(values)  # one token per value, "" included
    uniques = unpack(uniques) if uniques.dtype == np.uint64 else uniques
    assert uniques[codes].tolist() == values.tolist() and lengths.tolist() == [1] * len(values)
    ids, lengths = np.arange(1, 9), np.array([3, 0, 1, 2, 2])
    np.testing.assert_array_equal(pad_ids(ids, lengths, 2, "pre"), [[2, 3], [0, 0], [0, 4], [5, 6], [7, 8]])
    np.testing.assert_array_equal(pad_ids(ids, lengths, 2, "post"), [[1, 2], [0, 0], [4, 0], [5, 6], [7, 8]])
    codes, uniques, lengths = tokenize(np.array(["a||b", "c"], dtype=object), "||")  # multi-character: str
    assert uniques[codes].tolist() == ["a", "b", "c"] and lengths.tolist() == [2, 1]


@pytest.mark.parametrize("change, message", [
    (lambda p: p["feature_cols"][4].update(normalizer="Robust"), "normalizer must be one of"),
    (lambda p: p["feature_cols"][2].update(category_processor="hash_bucket"), "category_processor is not supported"),
    (lambda p: p["feature_cols"][5].update(splitter=None), "needs a splitter"),
    (lambda p: p["feature_cols"][5].update(padding="left"), "padding must be pre or post"),
    (lambda p: p["feature_cols"][2].update(dtype="bytes"), "dtype 'bytes'"),
    (lambda p: p["feature_cols"][5].update(share_embedding="price"), "share_embedding 'price' must name"),
    (lambda p: p.update(valid_size=0.1, build="streaming"), "valid_size (splitting the train file)"),
    (lambda p: p.update(chunk_rows=0), "chunk_rows must be a positive"),
    (lambda p: p.update(build="fast"), "build must be one of streaming, fuxictr"),
    (lambda p: p["feature_cols"][3].update(preprocess="copy_from(item)"), "remap: false needs integer ids"),
])
def test_bad_config_is_one_line_and_leaves_nothing(tmp_path, change, message):
    params = options_params(tmp_path / "csv", data_root=str(tmp_path / "out"), build="streaming")
    params["feature_cols"] = [dict(c) for c in params["feature_cols"]]
    change(params)
    with pytest.raises(UserError) as err:
        build_h5(params)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not os.path.exists(tmp_path / "out") or os.listdir(tmp_path / "out") == []


def test_bad_rows_stop_before_the_build(tmp_path):
    params = options_params(tmp_path / "csv", data_root=str(tmp_path / "out"), build="streaming")
    with open(params["valid_data"], "a") as f:
        f.write("1,3,i1,c1,notanumber,i1,c1,4\n")
    with pytest.raises(UserError) as err:
        build_h5(params)
    assert "\n" not in str(err.value) and "valid.csv" in str(err.value)
    assert os.listdir(tmp_path / "out") == []


def test_failure_mid_build_leaves_nothing(tmp_path, monkeypatch):
    """An error while writing the test split: no data folder, no temporary folder."""
    from interformer_fuxi import stream_build

    params = options_params(tmp_path / "csv", data_root=str(tmp_path / "out"), build="streaming")
    real = stream_build.StreamingBuilder.encode

    def encode(self, df, split):
        if split == "test":
            raise ValueError("disk full")
        return real(self, df, split)

    monkeypatch.setattr(stream_build.StreamingBuilder, "encode", encode)
    with pytest.raises(UserError, match="building H5 from CSV failed: disk full"):
        build_h5(params)
    assert os.listdir(tmp_path / "out") == []


def test_predict_encodes_with_the_streamed_processor(tmp_path):
    """The pickled processor transforms new rows as the build encoded them."""
    from fuxictr.features import FeatureMap
    from interformer_fuxi.predict import encode_chunk

    params = options_params(tmp_path / "csv", build="streaming")
    build_h5(params)
    data_dir = os.path.join(params["data_root"], "opts")
    processor = pickle.load(open(os.path.join(data_dir, "feature_processor.pkl"), "rb"))
    feature_map = FeatureMap("opts", data_dir)
    feature_map.load(os.path.join(data_dir, "feature_map.json"), {})
    chunk = pd.read_csv(params["test_data"], dtype=object)
    encoded = encode_chunk(processor, feature_map, chunk)
    arrays = h5_arrays(os.path.join(data_dir, "test.h5"))
    expected = np.hstack([arrays[k].reshape(len(chunk), -1) for k in list(feature_map.features) + feature_map.labels])
    meta = [i for k, v in feature_map.features.items() if v["type"] == "meta"
            for i in np.atleast_1d(feature_map.get_column_index(k))]
    keep = [i for i in range(expected.shape[1]) if i not in meta]
    np.testing.assert_allclose(encoded[:, keep], expected[:, keep])
