"""Inference cost of InterFormer and DIN: eager PyTorch, TorchScript and ONNX Runtime (CPU).

    python benchmarks/inference.py                                   # tiny_amazon, 1M rows for the CLI
    python benchmarks/inference.py --dataset movielens1m_x1_u1000    # real history lengths (<= 100)
    python benchmarks/inference.py --quick                           # fewer requests, 100k CLI rows
    python benchmarks/inference.py --dataset movielens1m_x1_u1000 --cli-only --models InterFormer \
        --backends pytorch torchscript                               # the CLI timing alone, cell by cell

The models are the project's Amazon settings: ``InterFormer_amazon`` (d = 64, 3 layers) and
``DIN_default`` (BARS's AmazonElectronics_x1 DIN: attention [512, 256], DNN [1024, 512, 256],
d = 64), on ``--dataset``'s feature map, with their initial weights (the cost does not depend
on the values). Requests are rows of the dataset's test split, drawn at random, so histories
have the dataset's real lengths. For each model and backend (eager PyTorch as the training
code runs it, with its CPU fast paths; the TorchScript and ONNX graphs of
``python -m interformer_fuxi.export``, which take the plain PyTorch path):

- single-request latency p50/p99 at batch 1 and 64 (the request already as named tensors);
- throughput at batch 1024 and 4096 (rows/s), and the process's peak resident memory while
  scoring batches of 4096 (GB, sampled every 5 ms; the model and the requests included);
- the time to score ``--rows`` rows of CSV (the test CSV repeated) with the scoring CLI's
  function (``predict.score_file``: validation, chunked parsing and encoding, scoring, writing;
  the process start and checkpoint load excluded), with its length buckets (the default:
  rows sorted by history length, each batch over its rows' window) and with ``--full_windows``.

Prints a Markdown table and writes ``benchmarks/results/inference/<dataset>.json``. The last
line is ``RESULT onnx_vs_eager_batch1_interformer=…x onnx_vs_eager_batch1_din=…x``.

``--cli-only`` times the CLI alone (length buckets; ``--full-windows`` adds the run without
them), one model and backend per fresh process, with the process's peak resident memory while
scoring: what a scoring job over a large file costs and whether the chunked reading keeps its
memory flat. Each cell is merged into ``<dataset>_cli_<rows>.json`` as it finishes, so an
hours-long grid can be measured a few cells at a time.
"""
import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from interformer_fuxi.atomic import atomic_write  # noqa: E402
from interformer_fuxi.export import export  # noqa: E402
from interformer_fuxi.predict import score_file  # noqa: E402
from interformer_fuxi.serving import ServingModel, batch_inputs  # noqa: E402

MODELS = {"InterFormer": "InterFormer_amazon", "DIN": "DIN_default"}
BACKENDS = ("pytorch", "torchscript", "onnx")


def load(dataset, template):
    """A model of ``template`` on ``dataset`` (built H5 data), its params and the test rows."""
    from fuxictr.pytorch.dataloaders import H5DataLoader

    from interformer_fuxi.runner import build_model, prepare

    params, feature_map, model_class = prepare(os.path.join(REPO, "config"), template,
                                               overrides={"dataset_id": dataset, "verbose": 0}, log=False)
    model = build_model(params, feature_map, model_class).eval()
    rows = H5DataLoader(feature_map, stage="test", **dict(params, batch_size=10 ** 9)).make_iterator()
    return params, model, next(iter(rows))


def runners(model, work_dir):
    """``{backend: f(inputs) -> scores}`` over the serving inputs (named tensors)."""
    import onnxruntime as ort

    serving = ServingModel(model).eval()
    export(serving, "torchscript", os.path.join(work_dir, "ts"))
    export(serving, "onnx", os.path.join(work_dir, "onnx"))
    traced = torch.jit.load(os.path.join(work_dir, "ts", "model.pt"))
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False  # the arena would keep batch 4096's peak (GBs) for good
    session = ort.InferenceSession(os.path.join(work_dir, "onnx", "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    names = serving.input_names
    return {"pytorch": serving, "torchscript": traced,
            "onnx": lambda *x: session.run(["score"], {n: t.numpy() for n, t in zip(names, x)})[0]}


class PeakRSS:
    """This process's peak resident memory (GB) since ``reset()``, sampled every 5 ms."""

    def __init__(self):
        self.peak = 0
        threading.Thread(target=self._sample, daemon=True).start()

    @staticmethod
    def now():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30

    def _sample(self):
        while True:
            self.peak = max(self.peak, self.now())
            time.sleep(0.005)

    def reset(self):
        self.peak = self.now()


def requests(model, rows, batch_size, count, seed):
    g = torch.Generator().manual_seed(seed)
    return [batch_inputs(model, rows[torch.randint(0, rows.shape[0], (batch_size,), generator=g)])
            for _ in range(count)]


def latency_ms(run, reqs, warmup=10):
    times = []
    with torch.no_grad():
        for i, x in enumerate(reqs[:warmup] + reqs):
            start = time.perf_counter()
            run(*x)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def throughput(run, reqs):
    with torch.no_grad():
        run(*reqs[0])  # warm-up
        start = time.perf_counter()
        for x in reqs:
            run(*x)
    return sum(x[0].shape[0] for x in reqs) / (time.perf_counter() - start)


def cli_seconds(model, params, rows, backend, work_dir, length_buckets=True):
    """Seconds for ``score_file`` over ``rows`` CSV rows (the test CSV repeated)."""
    import pandas as pd

    path = os.path.join(work_dir, f"rows_{rows}.csv")
    if not os.path.exists(path):
        test = pd.read_csv(params["_test_csv"], dtype=str)
        reps = -(-rows // len(test))
        pd.concat([test] * reps, ignore_index=True).head(rows).to_csv(path, index=False)
    start = time.perf_counter()
    score_file(model, params, path, os.path.join(work_dir, "scores.csv"), batch_size=4096, chunk_rows=20_000,
               backend=backend, length_buckets=length_buckets)
    return time.perf_counter() - start


def measure(name, dataset, rows, count, quick):
    """Every measurement of one model: ``{backend: {metric: value}}``."""
    import gc

    params, model, test_rows = load(dataset, MODELS[name])
    res = {b: {} for b in BACKENDS}
    with tempfile.TemporaryDirectory() as work_dir:
        run = runners(model, os.path.join(work_dir, name))
        for batch_size in (1, 64):
            reqs = requests(model, test_rows, batch_size, count, seed=batch_size)
            for backend in BACKENDS:
                res[backend][f"p50_ms_b{batch_size}"], res[backend][f"p99_ms_b{batch_size}"] = \
                    latency_ms(run[backend], reqs)
        memory = PeakRSS()
        for batch_size in (1024, 4096):
            reqs = requests(model, test_rows, batch_size, 3 if quick else 8, seed=batch_size)
            for backend in BACKENDS:
                gc.collect()
                memory.reset()
                res[backend][f"rows_per_s_b{batch_size}"] = throughput(run[backend], reqs)
                res[backend][f"peak_gb_b{batch_size}"] = memory.peak
        del run, reqs
        gc.collect()
        for backend in BACKENDS:
            res[backend]["cli_seconds"] = cli_seconds(model, params, rows, backend, work_dir)
            res[backend]["cli_seconds_full_windows"] = cli_seconds(model, params, rows, backend, work_dir,
                                                                   length_buckets=False)
    return res


def measure_cli(name, dataset, rows, backend, full_windows):
    """One CLI cell: ``{"cli_seconds", "peak_gb"[, "cli_seconds_full_windows"]}``."""
    params, model, _ = load(dataset, MODELS[name])
    memory = PeakRSS()
    with tempfile.TemporaryDirectory() as work_dir:
        memory.reset()
        res = {"cli_seconds": cli_seconds(model, params, rows, backend, work_dir), "peak_gb": memory.peak}
        if full_windows:
            res["cli_seconds_full_windows"] = cli_seconds(model, params, rows, backend, work_dir,
                                                          length_buckets=False)
    return res


def cli_grid(args, rows):
    """``--cli-only``: each (model, backend) in a fresh process, merged into the JSON as it ends."""
    path = os.path.join(args.out, f"{args.dataset}_cli_{rows}.json")
    results = {"dataset": args.dataset, "torch_threads": torch.get_num_threads(), "cli_rows": rows,
               "heap": "glibc defaults", "models": {}}
    if os.path.exists(path):
        with open(path) as f:
            results["models"] = json.load(f)["models"]
    os.makedirs(args.out, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    for name in args.models:
        for backend in args.backends:
            with context.Pool(1) as pool:
                cell = pool.apply(measure_cli, (name, args.dataset, rows, backend, args.full_windows))
            results["models"].setdefault(name, {})[backend] = cell
            print(f"{name}, {backend}: {cell['cli_seconds']:.0f} s, peak {cell['peak_gb']:.2f} GB", flush=True)
            with atomic_write(path) as f:  # a cell killed mid-write keeps the cells before it
                json.dump(results, f, indent=2)
    print(f"\nDataset {args.dataset}, torch threads {results['torch_threads']}, CLI over {rows:,} rows\n")
    print("| model | backend | CLI seconds | rows/s | peak GB | CLI seconds, full windows |")
    print("|---|---|---|---|---|---|")
    for name, res in results["models"].items():
        for backend, r in res.items():
            full = r.get("cli_seconds_full_windows")
            print(f"| {name} | {backend} | {r['cli_seconds']:,.0f} | {rows / r['cli_seconds']:,.0f} | "
                  f"{r['peak_gb']:.2f} | {'' if full is None else f'{full:,.0f}'} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="tiny_amazon", help="a dataset_id of config/dataset_config.yaml")
    parser.add_argument("--rows", type=int, default=None, help="CSV rows for the CLI timing (default 1M)")
    parser.add_argument("--quick", action="store_true", help="50 requests per latency, 100k CLI rows")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--cli-only", action="store_true", help="time the scoring CLI alone, cell by cell")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS,
                        help="with --cli-only: which backends")
    parser.add_argument("--full-windows", action="store_true", help="with --cli-only: also without length buckets")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "inference"))
    args = parser.parse_args(argv)
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    if args.cli_only:
        return cli_grid(args, rows)
    count = 50 if args.quick else 300
    # "heap": scoring runs on glibc's default heap (runner.py keeps freed memory for training only)
    results = {"dataset": args.dataset, "torch_threads": torch.get_num_threads(), "cli_rows": rows,
               "heap": "glibc defaults", "cli": "length buckets", "models": {}}
    path = os.path.join(args.out, f"{args.dataset}.json")
    if os.path.exists(path):  # keep the other models' rows measured under the same settings
        with open(path) as f:
            earlier = json.load(f)
        if all(earlier.get(k) == results[k] for k in ("torch_threads", "cli_rows", "heap", "cli")):
            results["models"] = {k: v for k, v in earlier["models"].items() if k not in args.models}
    # one process per model: ONNX Runtime's arena and the CPU heap keep their peak (GBs at
    # batch 4096), which the next model should not inherit
    context = multiprocessing.get_context("spawn")
    os.makedirs(args.out, exist_ok=True)
    for name in args.models:
        with context.Pool(1) as pool:
            results["models"][name] = pool.apply(measure, (name, args.dataset, rows, count, args.quick))
        print(f"{name}: done", flush=True)
        with open(path, "w") as f:  # after each model
            json.dump(results, f, indent=2)
    print_table(results)
    speedups = {name: res["pytorch"]["p50_ms_b1"] / res["onnx"]["p50_ms_b1"] for name, res in results["models"].items()}
    print("RESULT " + " ".join(f"onnx_vs_eager_batch1_{n.lower()}={s:.2f}x" for n, s in speedups.items()))


def print_table(results):
    print(f"\nDataset {results['dataset']}, torch threads {results['torch_threads']}, "
          f"CLI over {results['cli_rows']:,} rows\n")
    print("| model | backend | p50 / p99 ms, batch 1 | p50 / p99 ms, batch 64 | rows/s, batch 1024 | "
          "rows/s, batch 4096 | peak GB, batch 4096 | CLI seconds | CLI seconds, full windows |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, res in results["models"].items():
        for backend, r in res.items():
            print(f"| {name} | {backend} | {r['p50_ms_b1']:.2f} / {r['p99_ms_b1']:.2f} | "
                  f"{r['p50_ms_b64']:.2f} / {r['p99_ms_b64']:.2f} | {r['rows_per_s_b1024']:,.0f} | "
                  f"{r['rows_per_s_b4096']:,.0f} | {r['peak_gb_b4096']:.2f} | {r['cli_seconds']:.1f} | "
                  f"{r['cli_seconds_full_windows']:.1f} |")


if __name__ == "__main__":
    main()
