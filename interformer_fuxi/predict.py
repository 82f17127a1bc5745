"""``python -m interformer_fuxi.predict --expid X --data new.csv --out scores.csv [--gpu 0]``.

Scores new rows with a trained run: its best checkpoint, and the feature processor (the
vocabularies, the normalisers) that built its H5 data. The CSV is checked first, in one
vectorised pass (:mod:`interformer_fuxi.validate`: the header, the field counts, integer and
numeric columns, sequence separators), so bad input stops with one line naming the file,
line and column before anything is written. It is then read in chunks and encoded exactly
as FuxiCTR's build encodes a split: unseen ids become the out-of-vocabulary index. The label
column is optional, and so are the ``meta`` columns. The output holds the input's id columns
(the dataset's ``group_id`` and its ``meta`` columns, as they are in the input) and
``score``, the click probability, one row per input row in input order. It is written
atomically: complete, or not at all. ``--backend torchscript|onnx`` exports the checkpoint
to a temporary folder first (:mod:`interformer_fuxi.export`) and scores with that runtime.
Each chunk is scored in length buckets (:mod:`interformer_fuxi.length_buckets`: rows sorted
by history length, each batch over its rows' window) once a probe batch shows that the
model's scores ignore padding; ``--full_windows`` scores every padded position.
"""
import argparse
import os
import pickle
import sys

import numpy as np
import torch
from tqdm import tqdm

from .columns import feature_columns, label_columns
from .errors import UserError, report
from .runner import DEFAULT_CONFIG

CHUNK_ROWS = 100_000
BACKENDS = ("pytorch", "torchscript", "onnx")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Score a CSV with a trained expid.")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="config directory of the training run")
    parser.add_argument("--expid", required=True, help="experiment id, trained with run_expid.py")
    parser.add_argument("--data", required=True, help="CSV with the dataset's feature columns (label optional)")
    parser.add_argument("--out", required=True, help="output CSV: the id columns and score")
    parser.add_argument("--gpu", type=int, default=-1, help="GPU index, -1 for CPU")
    parser.add_argument("--batch_size", type=int, default=None, help="rows per forward pass "
                                                                      "(default: the expid's batch_size)")
    parser.add_argument("--chunk_rows", type=int, default=CHUNK_ROWS, help="CSV rows read at a time")
    parser.add_argument("--backend", default="pytorch", choices=BACKENDS,
                        help="pytorch (eager), or the checkpoint exported on the fly to torchscript or onnx "
                             "(ONNX Runtime on the CPU)")
    parser.add_argument("--full_windows", action="store_true", help="score every padded position (no "
                        "length buckets: rows in input order, histories at full length)")
    parser.add_argument("--model_zoo", default=None, help="FuxiCTR model_zoo/ folder, as for run_expid.py")
    return parser.parse_args(argv)


def read_header(path, sep):
    import csv

    if not os.path.isfile(path):
        raise UserError(f"{path}: data file not found")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return next(csv.reader([f.readline().rstrip("\r\n")], delimiter=sep), [])
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def scoring_params(params, header):
    """The dataset config as the scoring CSV needs it: no fixed header, label and ``meta``
    columns only where the CSV has them."""
    has = lambda name: name in header
    cols = [c for c in feature_columns(params) if c.get("type") != "meta" or has(c["name"])]
    labels = [c for c in label_columns(params) if has(c["name"])]
    return dict(params, csv_header=None, feature_cols=cols, label_col=labels)


def id_columns(params, header):
    """The input's id columns: ``group_id`` and the ``meta`` columns, where present."""
    names = [params.get("group_id")] + [c["name"] for c in feature_columns(params) if c.get("type") == "meta"]
    return [n for n in dict.fromkeys(names) if n and n in header]


def load_processor(params):
    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    path = os.path.join(data_dir, "feature_processor.pkl")
    if not os.path.isfile(path):
        raise UserError(f"{params['model_id']}: no feature processor at {path}; train the expid first "
                        f"(python run_expid.py --expid {params['model_id']})")
    with open(path, "rb") as f:
        return pickle.load(f)


def encode_chunk(processor, feature_map, chunk):
    """One CSV chunk (strings) -> the ``[rows, columns]`` array FuxiCTR's H5 loader would give."""
    absent = [c["name"] for c in processor.feature_cols if c.get("type") == "meta"] + feature_map.labels
    for name in absent:
        if name not in chunk.columns:
            chunk[name] = "0"  # a label or meta column the CSV lacks: not a model input, any value will do
    data = processor.transform(processor.preprocess(chunk))
    columns = []
    for name in list(feature_map.features) + feature_map.labels:
        columns.append(data[name].reshape(len(chunk), -1))
    return np.hstack(columns)


def make_scorer(serving, backend, work_dir):
    """A function from the serving inputs (:func:`interformer_fuxi.serving.batch_inputs`, a
    tuple of ``[B]`` / ``[B, T]`` tensors) to scores ``[B]`` (float32, CPU).

    ``torchscript`` and ``onnx`` export the model into ``work_dir`` first
    (:func:`interformer_fuxi.export.export`, parity-checked) and score with that runtime."""
    model = serving.model.eval()
    if backend == "pytorch":
        names = serving.input_names
        return lambda inputs: model.predict_batch({n: x.to(model.device) for n, x in zip(names, inputs)}).cpu()
    from .export import export

    folder = os.path.join(work_dir, backend)
    export(serving, backend, folder)
    if backend == "torchscript":
        graph = torch.jit.load(os.path.join(folder, "model.pt"))
        return lambda inputs: graph(*inputs)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False  # streaming: do not keep the largest batch's memory
    session = ort.InferenceSession(os.path.join(folder, "model.onnx"), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda inputs: torch.from_numpy(session.run(["score"], {n: x.numpy() for n, x in zip(names, inputs)})[0])


def score_file(model, params, path, out, batch_size=None, chunk_rows=CHUNK_ROWS, backend="pytorch",
               length_buckets=True):
    """Score ``path`` into ``out`` with ``backend``; returns the number of rows scored.
    ``length_buckets``: batches of similar history length over their own windows
    (:mod:`interformer_fuxi.length_buckets`), where the model's scores ignore padding."""
    import tempfile

    import pandas as pd

    from .atomic import atomic_write
    from .export import example_inputs
    from .length_buckets import score_bucketed, windows_agree
    from .serving import batch_inputs, serving_model
    from .validate import column_checks, validate_file

    serving = serving_model(model, params["model_id"])  # this package's models only: one clear line otherwise

    sep = params.get("sep", ",")
    header = read_header(path, sep)
    checked = scoring_params(params, header)
    rows = validate_file(path, checked, column_checks(checked)).rows
    processor = load_processor(params)
    ids = id_columns(params, header)
    wanted = set(processor.dtype_dict) | set(ids)
    batch_size = batch_size or int(params.get("batch_size", 1024))
    try:
        with tempfile.TemporaryDirectory() as work_dir, atomic_write(out, newline="") as f, \
                tqdm(total=rows, unit="rows", desc="score", disable=None) as bar:
            scorer = make_scorer(serving, backend, work_dir)
            # rows sorted by history length, each batch over its rows' window: the same scores
            # with less padding, for every model whose scores ignore padded positions
            bucketed = length_buckets and windows_agree(scorer, example_inputs(serving, batch_size=16),
                                                        params["model_id"])
            score = ((lambda inputs: score_bucketed(scorer, inputs, batch_size)) if bucketed else
                     (lambda inputs: torch.cat([scorer(b) for b in zip(*(x.split(batch_size) for x in inputs))])))
            f.write(",".join(ids + ["score"]) + "\n")
            for chunk in pd.read_csv(path, sep=sep, dtype=object, chunksize=chunk_rows,
                                     usecols=lambda c: c in wanted):  # read as FuxiCTR's build reads
                kept = chunk[ids].copy()
                batch = torch.from_numpy(encode_chunk(processor, model.feature_map, chunk))
                with torch.no_grad():
                    scores = score(batch_inputs(model, batch))
                kept["score"] = scores.double().numpy()
                kept.to_csv(f, header=False, index=False, float_format="%.9g")
                bar.update(len(chunk))
    except OSError as exc:
        raise UserError(f"{out}: cannot write the scores ({exc.strerror or exc})") from None
    return rows


def main(argv=None):
    args = parse_args(argv)
    from .cpu_heap import keep_freed_memory
    from .runner import load_trained

    if os.environ.get("INTERFORMER_CPU_HEAP") == "1":  # opt in: faster CPU scoring, higher peaks (README)
        keep_freed_memory()

    try:
        if args.backend != "pytorch" and args.gpu >= 0:
            raise UserError(f"--backend {args.backend} scores on the CPU; drop --gpu {args.gpu} or use --backend pytorch")
        overrides = {"model_zoo": os.path.abspath(args.model_zoo)} if args.model_zoo else None
        params, _, model = load_trained(args.config, args.expid, args.gpu, overrides)
        rows = score_file(model, params, args.data, args.out, args.batch_size, args.chunk_rows, args.backend,
                          length_buckets=not args.full_windows)
    except UserError as exc:
        return report(exc)
    print(f"Scored {rows} rows of {args.data} with {args.expid} ({args.backend}): {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
