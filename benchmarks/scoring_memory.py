"""Peak resident memory and speed of scoring, per model, backend and batch size, with and without the kept heap.

    python benchmarks/scoring_memory.py --dataset movielens1m_x1_u1000 --models DIN --batches 1024 4096

Each (model, backend, heap, batch) runs in a fresh process, so no peak is inherited: it loads
the model as ``benchmarks/inference.py`` does, exports it, scores 8 random test batches and
prints the peak resident memory (GB, sampled every 5 ms, the model and requests included)
and the rows scored per second.
``kept`` applies the training's heap setting (``interformer_fuxi/cpu_heap.py``: ``mmap`` off,
freed memory never trimmed); ``glibc`` keeps glibc's defaults, as scoring and export do.
A process past ``--limit_gb`` stops itself (reported as ``> limit``), so that a probe never
takes the machine's memory from other work.
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = """
import os, sys, tempfile, threading, time
sys.path.insert(0, {here!r})
import inference
from interformer_fuxi.cpu_heap import keep_freed_memory
if {heap!r} == "kept":
    assert keep_freed_memory(), "glibc's heap settings did not apply"
memory = inference.PeakRSS()
def guard():
    while True:
        if memory.peak > {limit}:
            print("over", flush=True)
            os._exit(3)
        time.sleep(0.005)
threading.Thread(target=guard, daemon=True).start()
params, model, rows = inference.load({dataset!r}, inference.MODELS[{model!r}])
with tempfile.TemporaryDirectory() as work_dir:
    run = inference.runners(model, work_dir)[{backend!r}]
    reqs = inference.requests(model, rows, {batch}, 8, seed={batch})
    memory.reset()
    rate = inference.throughput(run, reqs)
    print(f"{{memory.peak:.2f}} GB, {{rate:,.0f}} rows/s", flush=True)
"""


def probe(dataset, model, backend, heap, batch, limit_gb):
    env = dict(os.environ)
    env.pop("INTERFORMER_CPU_HEAP", None)
    code = CHILD.format(here=HERE, heap=heap, limit=limit_gb, dataset=dataset, model=model, backend=backend,
                        batch=batch)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    if lines and lines[-1] == "over":
        return f"> {limit_gb:g} GB"
    if out.returncode != 0 or not lines:
        raise SystemExit(f"probe {model}/{backend}/{heap}/{batch} failed: {out.stderr.strip().splitlines()[-1:]}")
    return lines[-1]


def main(argv=None):
    sys.path.insert(0, HERE)
    from inference import BACKENDS, MODELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="tiny_amazon")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("--heaps", nargs="+", default=["kept", "glibc"], choices=["kept", "glibc"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1024, 4096])
    parser.add_argument("--limit_gb", type=float, default=8.0)
    args = parser.parse_args(argv)
    print(f"Dataset {args.dataset}: peak resident GB and rows/s while scoring 8 batches\n")
    print("| model | backend | heap | " + " | ".join(f"batch {b}" for b in args.batches) + " |")
    print("|---|---|---|" + "---|" * len(args.batches))
    for model in args.models:
        for backend in args.backends:
            for heap in args.heaps:
                peaks = [probe(args.dataset, model, backend, heap, b, args.limit_gb) for b in args.batches]
                print(f"| {model} | {backend} | {heap} | " + " | ".join(peaks) + " |", flush=True)


if __name__ == "__main__":
    main()
