"""Export for serving: ONNX Runtime and TorchScript score like PyTorch, over dynamic batch and
sequence length, on the plain PyTorch path (no C++ kernel, no host-side grouping in the graph)."""
import json

import pytest
import torch

from interformer_fuxi import InterFormer
from interformer_fuxi.errors import UserError
from interformer_fuxi.export import export
from interformer_fuxi.layers.attention import set_onnx_mask_form
from interformer_fuxi.models import DCNv2, DHEN, DIN, DOT, TransAct, WuKong
from interformer_fuxi.models.interformer import INTERLEAVE_MODES
from interformer_fuxi.serving import ServingModel, batch_inputs, serving_model

from synthetic import MODEL_DEFAULTS, batch, feature_map


def fmap():
    """A dense feature, two sparse ones and two aligned sequences (all input kinds)."""
    return feature_map(dense=1, sequences=(("item_history", "item_id"), ("cate_history", "cate_id")), max_len=12)


def build(model_class, **kwargs):
    torch.manual_seed(0)
    params = dict(MODEL_DEFAULTS, **kwargs)
    if model_class is InterFormer:
        params.setdefault("num_layers", 2)
    return model_class(fmap(), **params).eval()


def eager(model, data):
    with torch.no_grad():
        return model.predict_batch(data)


def check_parity(serving, session_scores, data):
    expected = eager(serving.model, data)
    got = session_scores(batch_inputs(serving.model, data))
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), float((got - expected).abs().max())


def onnx_scorer(out, serving):
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])

    def score(inputs):
        return torch.from_numpy(session.run(["score"], {n: x.numpy() for n, x in zip(serving.input_names, inputs)})[0])
    return score


CASES = ([(InterFormer, {"interleave_mode": m}) for m in INTERLEAVE_MODES]
         + [(m, {}) for m in (DOT, DCNv2, DHEN, WuKong, DIN, TransAct)])


@pytest.mark.parametrize("model_class,kwargs", CASES,
                         ids=[f"{c.__name__}-{k.get('interleave_mode', '')}".strip("-") for c, k in CASES])
def test_onnx_runtime_scores_like_pytorch_for_any_batch_and_length(tmp_path, model_class, kwargs):
    serving = ServingModel(build(model_class, **kwargs))
    sig = export(serving, "onnx", tmp_path / "out")
    score = onnx_scorer(tmp_path / "out", serving)
    # other batch sizes than the export's example, histories of every length, both paddings
    check_parity(serving, score, batch(fmap(), size=50, seed=1))
    check_parity(serving, score, batch(fmap(), size=7, seed=2, padding="pre"))
    check_parity(serving, score, batch(fmap(), size=1, seed=3, lengths=[0]))
    assert sig["parity_max_abs_diff"] <= 1e-5


def test_the_onnx_attention_adds_its_padding_mask(tmp_path):
    """A boolean mask exports as selects and NaN checks over every [B, H, N, N] score; the
    additive one as a broadcast add: the graph holds no NaN check, and pre- or post-padded
    histories of any length (the empty one too) still score as in PyTorch, as with the boolean one."""
    import onnx

    serving = ServingModel(build(InterFormer))
    export(serving, "onnx", tmp_path / "out")
    ops = [node.op_type for node in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.node]
    assert "IsNaN" not in ops
    histories = batch(fmap(), size=13, seed=4, padding="pre", lengths=list(range(13)))
    check_parity(serving, onnx_scorer(tmp_path / "out", serving), histories)
    # the boolean form, kept for benchmarks/onnx_mask.py, scores the same with the NaN checks
    set_onnx_mask_form(serving, additive=False)
    export(serving, "onnx", tmp_path / "boolean")
    assert "IsNaN" in [node.op_type for node in onnx.load(str(tmp_path / "boolean" / "model.onnx")).graph.node]
    check_parity(serving, onnx_scorer(tmp_path / "boolean", serving), histories)


def test_target_match_exports_with_parity(tmp_path):
    model = build(InterFormer, target_match=True)
    with torch.no_grad():
        model.target_match.weight.normal_(std=0.1)  # zero at init would hide a wrong graph
    serving = ServingModel(model)
    export(serving, "onnx", tmp_path / "out")
    check_parity(serving, onnx_scorer(tmp_path / "out", serving), batch(fmap(), size=20, seed=6))


def test_target_attention_exports_with_parity(tmp_path):
    serving = ServingModel(build(InterFormer, target_attention=True))
    export(serving, "onnx", tmp_path / "out")
    score = onnx_scorer(tmp_path / "out", serving)
    check_parity(serving, score, batch(fmap(), size=20, seed=7))
    check_parity(serving, score, batch(fmap(), size=3, seed=8, lengths=[0, 1, 2]))


def test_onnx_and_torchscript_accept_shorter_sequences(tmp_path):
    """Sequence length is a dynamic axis: a history tensor of 5 columns scores as the same
    history padded to the full ``max_len``."""
    serving = ServingModel(build(InterFormer))
    export(serving, "onnx", tmp_path / "onnx")
    export(serving, "torchscript", tmp_path / "ts")
    data = batch(fmap(), size=9, seed=4, lengths=[5] * 9)
    full = batch_inputs(serving.model, data)
    short = tuple(x[:, :5] if x.dim() == 2 else x for x in full)
    expected = eager(serving.model, data)
    traced = torch.jit.load(str(tmp_path / "ts" / "model.pt"))
    for scores in (onnx_scorer(tmp_path / "onnx", serving)(short), traced(*short)):
        assert torch.allclose(scores, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_class,kwargs", [(InterFormer, {}), (InterFormer, {"interleave_mode": "sole"}),
                                                (DIN, {}), (TransAct, {})])
def test_torchscript_scores_like_pytorch(tmp_path, model_class, kwargs):
    serving = ServingModel(build(model_class, **kwargs))
    export(serving, "torchscript", tmp_path / "ts")
    traced = torch.jit.load(str(tmp_path / "ts" / "model.pt"))
    check_parity(serving, lambda inputs: traced(*inputs), batch(fmap(), size=33, seed=5))


def test_the_exported_graph_holds_none_of_the_cpu_fast_paths(tmp_path, monkeypatch):
    """The C++ kernels, the folded rotation, the length grouping and the distinct-token merge
    run in eager CPU inference, and none of them is reached while the graph is captured."""
    import interformer_fuxi.arches.feature_arch as feature_arch
    import interformer_fuxi.layers.attention as attention
    import interformer_fuxi.layers.pma as pma
    import interformer_fuxi.arches.sequence_arch as sequence_arch
    import interformer_fuxi.models.interformer as interformer

    calls, capturing = {}, []

    def spy(module, name):
        real = getattr(module, name)

        def wrapped(*args, **kwargs):
            key = ("captured " if capturing else "") + name
            calls[key] = calls.get(key, 0) + 1
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapped)

    def capture(module, name):  # the exporters: what runs inside them is being captured
        real = getattr(module, name)

        def wrapped(*args, **kwargs):
            capturing.append(name)
            try:
                return real(*args, **kwargs)
            finally:
                capturing.pop()
        monkeypatch.setattr(module, name, wrapped)

    for module, name in [(attention, "fused_attention"), (attention, "column_qkv"), (pma, "fused_seed_pool"),
                         (sequence_arch, "fused_pffn_block"), (interformer, "length_groups")]:
        spy(module, name)
    spy(torch, "unique")  # the distinct-token merge of the Feature Arch
    assert feature_arch.torch is torch
    model = build(InterFormer, embedding_dim=32, num_heads=2)
    for mha in (m for m in model.modules() if isinstance(m, attention.RotaryMultiheadAttention)):
        mha.fold_min_rows = 1
    data = batch(fmap(), size=64, seed=6, lengths=[12] * 32 + list(range(32)))
    eager(model, data)
    kernels_built = pma.fused_seed_pool_applies(torch.zeros(1, 4, 32), torch.zeros(2, 32))
    expected = {"length_groups", "unique", "column_qkv"} | ({"fused_attention", "fused_seed_pool",
                                                              "fused_pffn_block"} if kernels_built else set())
    assert expected <= set(calls), calls  # eager inference takes the fast paths ...
    calls.clear()
    capture(torch.onnx, "export")
    capture(torch.jit, "trace")
    export(ServingModel(model), "onnx", tmp_path / "onnx")
    export(ServingModel(model), "torchscript", tmp_path / "ts")
    assert not [k for k in calls if k.startswith("captured")], calls  # ... the captured graphs none
    import onnx
    graph = onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}  # standard operators only
    assert {n.op_type for n in torch.jit.load(str(tmp_path / "ts" / "model.pt")).inlined_graph.nodes()
            if n.kind().startswith("interformer")} == set()


def test_signature_names_inputs_in_order_with_dtypes_and_vocabularies(tmp_path):
    serving = ServingModel(build(DIN))
    export(serving, "onnx", tmp_path / "out", extra={"expid": "X"})
    sig = json.loads((tmp_path / "out" / "signature.json").read_text())
    assert [i["name"] for i in sig["inputs"]] == ["dense_0", "item_id", "cate_id", "item_history", "cate_history"]
    by_name = {i["name"]: i for i in sig["inputs"]}
    assert by_name["dense_0"]["dtype"] == "float32" and by_name["dense_0"]["shape"] == ["batch"]
    assert by_name["item_history"] == {"name": "item_history", "type": "sequence", "dtype": "int64",
                                       "shape": ["batch", "seq_len"], "vocab_size": 50, "padding_idx": 0,
                                       "oov_idx": None, "max_len": 12, "share_embedding": "item_id"}
    assert sig["outputs"][0]["name"] == "score" and sig["expid"] == "X" and sig["format"] == "onnx"
    import onnxruntime as ort
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == [i["name"] for i in sig["inputs"]]


def test_a_failed_export_leaves_the_output_folder_as_it_was(tmp_path, monkeypatch):
    import interformer_fuxi.export as export_module

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)  # no graph can pass
    with pytest.raises(UserError, match="away from PyTorch"):
        export(ServingModel(build(DOT)), "torchscript", out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


def test_a_fuxictr_zoo_model_is_refused_with_one_line():
    class Foreign(torch.nn.Module):
        pass
    with pytest.raises(UserError, match="X: Foreign comes from a FuxiCTR model_zoo"):
        serving_model(Foreign(), "X")
