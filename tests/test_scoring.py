"""Batch scoring of a CSV with a trained run (``python -m interformer_fuxi.predict``): the same
scores as ``model.predict`` on the H5 split, unseen ids as FuxiCTR encodes them, an optional
label, and one-line errors with nothing written."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO

EXPID = "InterFormer_tiny"


def package_env():
    """The environment of a subprocess that imports this checkout's package."""
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def cli(module, *args, cwd):
    return subprocess.run([sys.executable, "-m", f"interformer_fuxi.{module}", *args], cwd=cwd, env=package_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny project with ``InterFormer_tiny`` trained for one epoch; the model and its test split."""
    from fuxictr.pytorch.dataloaders import H5DataLoader

    from interformer_fuxi.runner import run_expid

    root = tmp_path_factory.mktemp("scoring")
    shutil.copytree(os.path.join(REPO, "config"), root / "config")
    shutil.copytree(os.path.join(REPO, "data", "tiny_amazon"), root / "data" / "tiny_amazon")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        params, model, _, _ = run_expid("config", EXPID, overrides={"epochs": 1, "verbose": 0})
        test_gen = H5DataLoader(model.feature_map, stage="test", **params).make_iterator()
        expected = model.predict(test_gen)
    finally:
        os.chdir(cwd)
    return root, model, expected


def score(root, data, out="scores.csv", *extra):
    return cli("predict", "--config", "config", "--expid", EXPID, "--data", str(data), "--out", out, *extra,
               cwd=root)


def test_scores_equal_model_predict_on_the_built_test_split(trained):
    root, _, expected = trained
    result = score(root, "data/tiny_amazon/test.csv", "scores.csv", "--chunk_rows", "300", "--batch_size", "77")
    assert result.returncode == 0, result.stderr
    scores = pd.read_csv(root / "scores.csv")
    assert list(scores.columns) == ["user_id", "score"]
    source = pd.read_csv(root / "data/tiny_amazon/test.csv")
    assert (scores["user_id"].values == source["user_id"].values).all()  # input order, ids as given
    np.testing.assert_allclose(scores["score"].values, expected, atol=1e-6, rtol=0)


def test_a_csv_without_the_label_scores_the_same(trained, tmp_path):
    root, _, expected = trained
    pd.read_csv(root / "data/tiny_amazon/test.csv").drop(columns=["label"]).to_csv(tmp_path / "new.csv", index=False)
    result = score(root, tmp_path / "new.csv", str(tmp_path / "s.csv"))
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(pd.read_csv(tmp_path / "s.csv")["score"].values, expected, atol=1e-6, rtol=0)


def test_unseen_ids_score_as_the_out_of_vocabulary_index(trained, tmp_path):
    from interformer_fuxi.predict import encode_chunk, load_processor
    from interformer_fuxi.runner import prepare

    root, model, _ = trained
    rows = pd.read_csv(root / "data/tiny_amazon/test.csv", dtype=str).head(4)
    unseen_a, unseen_b = rows.copy(), rows.copy()
    unseen_a["item_id"], unseen_b["item_id"] = "never-seen-1", "never-seen-2"
    unseen_a["item_history"] = rows["item_history"] + "^never-seen-3"
    unseen_b["item_history"] = rows["item_history"] + "^never-seen-4"
    pd.concat([rows, unseen_a, unseen_b]).to_csv(tmp_path / "new.csv", index=False)
    assert score(root, tmp_path / "new.csv", str(tmp_path / "s.csv")).returncode == 0
    s = pd.read_csv(tmp_path / "s.csv")["score"].values
    np.testing.assert_allclose(s[4:8], s[8:12], atol=1e-7)  # two different unseen ids: one OOV index
    assert np.abs(s[4:8] - s[:4]).max() > 1e-4  # and not the known items' scores
    cwd = os.getcwd()
    os.chdir(root)
    try:
        params = prepare("config", EXPID, log=False)[0]
        encoded = encode_chunk(load_processor(params), model.feature_map, unseen_a.copy())
    finally:
        os.chdir(cwd)
    spec = model.feature_map.features["item_id"]
    assert (encoded[:, model.feature_map.get_column_index("item_id")] == spec["oov_idx"]).all()


@pytest.mark.parametrize("edit,message", [
    (lambda df: df.drop(columns=["cate_id"]), "column 'cate_id' configured in tiny_amazon is missing"),
    (lambda df: df.assign(user_id=["7"] * (len(df) - 1) + ["seven"]), "line {last}: user_id"),
    (lambda df: df.assign(item_history=df["item_history"].str.replace("^", "|", regex=False)), "item_history"),
])
def test_bad_input_gets_one_line_exit_2_and_no_output(trained, tmp_path, edit, message):
    root, _, _ = trained
    df = edit(pd.read_csv(root / "data/tiny_amazon/test.csv", dtype=str))
    df.to_csv(tmp_path / "bad.csv", index=False)
    result = score(root, tmp_path / "bad.csv", str(tmp_path / "s.csv"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'bad.csv'}"), result.stderr
    assert message.format(last=len(df) + 1) in lines[0]
    assert os.listdir(tmp_path) == ["bad.csv"]  # no partial scores, no temporary file


def test_no_trained_checkpoint_and_a_missing_file_get_one_line(trained, tmp_path):
    root, _, _ = trained
    result = cli("predict", "--config", "config", "--expid", "DIN_tiny", "--data", "data/tiny_amazon/test.csv",
                 "--out", str(tmp_path / "s.csv"), cwd=root)
    assert result.returncode == 2 and "DIN_tiny: no checkpoint at" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = score(root, tmp_path / "nope.csv", str(tmp_path / "s.csv"))
    assert result.returncode == 2 and "nope.csv: data file not found" in result.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("backend", ["onnx", "torchscript"])
def test_the_exported_backends_score_like_pytorch(trained, tmp_path, backend):
    root, _, expected = trained
    result = score(root, "data/tiny_amazon/test.csv", str(tmp_path / "s.csv"), "--backend", backend)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(pd.read_csv(tmp_path / "s.csv")["score"].values, expected, atol=1e-5, rtol=0)
    assert os.listdir(tmp_path) == ["s.csv"]  # the exported graph lived in a temporary folder


def test_scoring_buckets_rows_by_history_length_unless_told_not_to(trained, tmp_path, monkeypatch):
    """The CLI's batches run over short windows (tiny_amazon's histories hold 0 to 20 of 20
    slots) and score as the full-width batches do; ``--full_windows`` scores every slot."""
    from interformer_fuxi import length_buckets
    from interformer_fuxi.predict import main

    root, _, expected = trained
    widths, real = [], length_buckets.bucketed_batches

    def spy(inputs, batch_size):
        for rows, batch in real(inputs, batch_size):
            widths.append(max(x.shape[1] for x in batch if x.dim() == 2))
            yield rows, batch
    monkeypatch.setattr(length_buckets, "bucketed_batches", spy)
    monkeypatch.chdir(root)
    out = {}
    for flag in ([], ["--full_windows"]):
        out[bool(flag)] = str(tmp_path / f"s{len(flag)}.csv")
        assert main(["--config", "config", "--expid", EXPID, "--data", "data/tiny_amazon/test.csv",
                     "--out", out[bool(flag)], "--batch_size", "64", *flag]) == 0
        if not flag:
            scored = widths[-18:]  # 1,122 rows in batches of 64 (the probe's batches come first)
            assert len(widths) > 18 and min(scored) < 20 and scored == sorted(scored)
            count = len(widths)
    assert len(widths) == count  # no buckets with --full_windows
    for path in out.values():
        np.testing.assert_allclose(pd.read_csv(path)["score"].values, expected, atol=1e-5, rtol=0)


def test_export_cli_writes_the_graph_and_its_signature(trained, tmp_path):
    import json

    root, model, _ = trained
    result = cli("export", "--config", "config", "--expid", EXPID, "--format", "torchscript",
                 "--out", str(tmp_path / "ts"), cwd=root)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "ts")) == ["model.pt", "signature.json"]
    sig = json.loads((tmp_path / "ts" / "signature.json").read_text())
    assert sig["expid"] == EXPID and sig["format"] == "torchscript" and sig["parity_max_abs_diff"] <= 1e-5
    assert [i["name"] for i in sig["inputs"]] == ["item_id", "cate_id", "item_history", "cate_history"]
    assert sig["inputs"][0]["vocab_size"] == model.feature_map.features["item_id"]["vocab_size"]
    result = cli("export", "--config", "config", "--expid", "DIN_tiny", "--format", "onnx",
                 "--out", str(tmp_path / "din"), cwd=root)
    assert result.returncode == 2 and "DIN_tiny: no checkpoint at" in result.stderr
    assert not (tmp_path / "din").exists()


def test_scoring_keeps_glibcs_heap_and_training_keeps_the_freed_memory(trained):
    # The kept heap (interformer_fuxi/cpu_heap.py) speeds CPU training but more than doubles a
    # graph runtime's peak when scoring: loading a trained run for scoring leaves it off.
    root, _, _ = trained
    script = ("from interformer_fuxi import cpu_heap\n"
              "from interformer_fuxi.runner import load_trained, run_expid\n"
              f"load_trained('config', '{EXPID}')\n"
              "print(cpu_heap._applied)\n"
              f"run_expid('config', '{EXPID}', overrides={{'epochs': 1, 'verbose': 0, 'model_root': './heap_check/'}})\n"
              "print(cpu_heap._applied)\n")
    env = package_env()
    env.pop("INTERFORMER_CPU_HEAP", None)
    out = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["False", "True"]
    # INTERFORMER_CPU_HEAP=1 opts the scoring CLI into the kept heap (faster, higher peaks)
    script = ("import sys\nfrom interformer_fuxi import cpu_heap, predict\n"
              f"assert predict.main(['--expid', '{EXPID}', '--config', 'config', '--data', "
              "'data/tiny_amazon/test.csv', '--out', sys.argv[1]]) == 0\nprint(cpu_heap._applied)\n")
    for value, applied in ((None, "False"), ("1", "True")):
        env = package_env()
        env.pop("INTERFORMER_CPU_HEAP", None)
        if value:
            env["INTERFORMER_CPU_HEAP"] = value
        out = subprocess.run([sys.executable, "-c", script, f"heap_{value}.csv"], cwd=root, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[-1] == applied
