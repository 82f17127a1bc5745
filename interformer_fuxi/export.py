"""``python -m interformer_fuxi.export --expid X --format onnx|torchscript --out DIR``.

Writes a trained run's best checkpoint as a graph that scores outside this package, from
the embedding lookups to the click probability (:class:`~interformer_fuxi.serving.ServingModel`):

- ``onnx``: ``DIR/model.onnx`` (opset of ``torch.onnx``'s dynamo exporter), for ONNX Runtime;
- ``torchscript``: ``DIR/model.pt``, a traced module for ``torch.jit.load`` (C++ ``torch::jit::load``);
- both: ``DIR/signature.json``, the input names in order, their dtypes, shapes and vocabularies.

Batch size and sequence length are dynamic. The graph is captured on the plain PyTorch path
(:func:`~interformer_fuxi.layers.capture.capturing_graph`): the CPU C++ kernels, the length
grouping and the distinct-token merge are training-time details and never enter it. Before
the folder appears, the exported graph scores an example batch and must match eager PyTorch
within ``1e-5``. ``DIR`` is written atomically: complete, or left as it was.
"""
import argparse
import json
import logging
import os
import sys
import warnings

import torch

from .errors import UserError, report
from .runner import DEFAULT_CONFIG

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
TOLERANCE = 1e-5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Export a trained expid for serving (ONNX or TorchScript).")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="config directory of the training run")
    parser.add_argument("--expid", required=True, help="experiment id, trained with run_expid.py")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="graph format")
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    return parser.parse_args(argv)


def example_inputs(serving, batch_size=3, seq_len=None, seed=0):
    """Random valid inputs (ids in ``[1, vocab)``, sequences with some padding) as a tuple."""
    generator = torch.Generator().manual_seed(seed)
    features = serving.model.feature_map.features
    inputs = []
    for name in serving.input_names:
        spec = features[name]
        if spec["type"] == "numeric":
            inputs.append(torch.randn(batch_size, generator=generator))
            continue
        high = max(int(spec["vocab_size"]) - 1, 2)
        if spec["type"] == "sequence":
            T = seq_len or int(spec["max_len"])
            ids = torch.randint(1, high, (batch_size, T), generator=generator)
            ids[0, : T // 2] = 0  # one row pre-padded, one row empty
            ids[-1] = 0
            inputs.append(ids)
        else:
            inputs.append(torch.randint(1, high, (batch_size,), generator=generator))
    return tuple(inputs)


def dynamic_shapes(serving):
    """One ``batch`` dimension for every input, one ``seq_len`` per distinct sequence ``max_len``."""
    from torch.export import Dim

    features = serving.model.feature_map.features
    batch, seq = Dim("batch"), {}
    shapes = []
    for name in serving.input_names:
        spec = features[name]
        if spec["type"] == "sequence":
            max_len = int(spec["max_len"])
            seq.setdefault(max_len, Dim(f"seq_len_{max_len}" if seq else "seq_len", max=max_len))
            shapes.append({0: batch, 1: seq[max_len]})
        else:
            shapes.append({0: batch})
    return (tuple(shapes),)  # the shapes of forward's one *features argument


def export_onnx(serving, inputs, path):
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's translator)
    except ImportError:
        raise UserError("--format onnx needs the onnx, onnxscript and onnxruntime packages "
                        "(pip install -r requirements.txt)") from None
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # its notes on optional torchvision ops are noise here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # one self-contained file (weights inside): CTR models stay far below protobuf's 2 GB
            torch.onnx.export(serving, inputs, path, input_names=serving.input_names, output_names=["score"],
                              dynamic_shapes=dynamic_shapes(serving), dynamo=True, external_data=False,
                              verbose=False)
    finally:
        exporter_log.setLevel(level)


def run_onnx(path, serving, inputs):
    """Scores of the ONNX file at ``path`` under ONNX Runtime (CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = {name: x.numpy() for name, x in zip(serving.input_names, inputs)}
    return torch.from_numpy(session.run(["score"], feed)[0])


def export_torchscript(serving, inputs, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes read as Python ints
        traced = torch.jit.trace(serving, inputs, check_trace=False)
    traced.save(path)


def export(serving, fmt, out, extra=None):
    """Write ``serving`` to the folder ``out`` in format ``fmt``; returns the signature written."""
    from .atomic import atomic_dir
    from .serving import signature

    serving = serving.eval().cpu()
    inputs = example_inputs(serving)
    with torch.no_grad():
        expected = serving(*inputs)
    with atomic_dir(out) as tmp:
        path = os.path.join(tmp, FORMATS[fmt])
        with torch.no_grad():
            if fmt == "onnx":
                export_onnx(serving, inputs, path)
                scores = run_onnx(path, serving, inputs)
            else:
                export_torchscript(serving, inputs, path)
                scores = torch.jit.load(path)(*inputs)
        gap = float((scores - expected).abs().max())
        if not gap <= TOLERANCE:
            raise UserError(f"{out}: the exported {fmt} graph scores the example batch {gap:.2e} away from "
                            f"PyTorch (tolerance {TOLERANCE:g}); nothing written")
        model = serving.model
        sig = signature(model.feature_map, model.model_id)
        sig.update(extra or {}, format=fmt, file=FORMATS[fmt], torch=torch.__version__, parity_max_abs_diff=gap)
        with open(os.path.join(tmp, "signature.json"), "w") as f:
            json.dump(sig, f, indent=2)
    return sig


def main(argv=None):
    args = parse_args(argv)
    from .runner import load_trained
    from .serving import serving_model

    try:
        _, _, model = load_trained(args.config, args.expid)
        sig = export(serving_model(model, args.expid), args.format, args.out,
                     extra={"expid": args.expid, "checkpoint": os.path.abspath(model.checkpoint)})
    except UserError as exc:
        return report(exc)
    print(f"Exported {args.expid} ({sig['model_id']}) as {args.format} to {os.path.abspath(args.out)}: "
          f"{len(sig['inputs'])} inputs, parity with PyTorch {sig['parity_max_abs_diff']:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
