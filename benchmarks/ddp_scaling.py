"""One process against data-parallel processes on the CPU: training samples/s and final metrics.

Runs one expid three ways on the same built data, each from the start:

* ``python run_expid.py`` (FuxiCTR's loader, ``--threads`` torch threads);
* ``torchrun --nproc_per_node 1`` (the sharded loader, the same threads);
* ``torchrun --nproc_per_node N`` (N ranks of ``threads / N`` threads each, gloo).

The last two draw the same global batches (seed + epoch), so their metrics agree up to float
summation order; the plain run shuffles with FuxiCTR's sampler and differs by a seed's worth.
Samples/s come from the epoch log line (evaluation excluded).

Usage: ``python benchmarks/ddp_scaling.py --expid InterFormer_movielens1m --dataset movielens1m_x1_u1000
--epochs 1 [--nproc 2] [--threads 2] [--set batch_size=1024]``; results:
``benchmarks/results/ddp_scaling/<dataset>_<expid>.json`` and a Markdown table.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from interformer_fuxi.config import dump_yaml, load_yaml, read_sections  # noqa: E402

PATH_KEYS = ("data_root", "train_data", "valid_data", "test_data")


def derived_config(config_dir, expid, dataset, epochs, overrides, out_dir):
    """A config dir holding ``expid`` on ``dataset`` with absolute data paths and a private model_root."""
    models = read_sections(config_dir, "model_config")
    datasets = read_sections(config_dir, "dataset_config")
    section = dict(models[expid], dataset_id=dataset, epochs=epochs, verbose=0,
                   model_root=os.path.join(out_dir, "checkpoints"), **overrides)
    data = {k: (os.path.join(REPO, v) if k in PATH_KEYS and isinstance(v, str) else v)
            for k, v in datasets[dataset].items() if k != "oracle_data"}
    return write_config(out_dir, {"Base": models.get("Base", {}), expid: section}, {dataset: data}), section


def write_config(out_dir, models, datasets):
    """``<out_dir>/config/{model,dataset}_config.yaml`` holding ``models`` and ``datasets``."""
    cfg = os.path.join(out_dir, "config")
    os.makedirs(cfg, exist_ok=True)
    with open(os.path.join(cfg, "model_config.yaml"), "w") as f:
        dump_yaml(models, f)
    with open(os.path.join(cfg, "dataset_config.yaml"), "w") as f:
        dump_yaml(datasets, f)
    return cfg


def run(label, launch, threads, cfg, expid, dataset, work, model_root):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=REPO)
    cmd = launch + [os.path.join(REPO, "run_expid.py"), "--config", cfg, "--expid", expid, "--gpu", "-1",
                    "--fresh"]
    start = time.time()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode:
        raise SystemExit(f"{label} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    log = open(os.path.join(model_root, dataset, expid + ".log")).read()
    rates = [float(r) for r in re.findall(r"samples in [\d.]+ s: (\d+) samples/s", log)]
    line = open(os.path.join(work, "config.csv")).read().strip().splitlines()[-1]
    test = {k: float(v) for k, v in (kv.split(": ") for kv in line.split("[test] ")[1].split(" - "))}
    return {"run": label, "threads_per_process": threads, "samples_per_s": rates, "wall_s": round(wall, 1),
            "test": test}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(REPO, "config"))
    parser.add_argument("--expid", default="InterFormer_movielens1m")
    parser.add_argument("--dataset", default="movielens1m_x1_u1000")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads in all, split over the ranks")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="model-config overrides")
    parser.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results", "ddp_scaling"))
    args = parser.parse_args(argv)
    overrides = {k: load_yaml(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    out = tempfile.mkdtemp(prefix="ddp_scaling_")
    cfg, section = derived_config(args.config, args.expid, args.dataset, args.epochs, overrides, out)
    work = os.path.join(out, "work")
    os.makedirs(work)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    plans = [("python run_expid.py", [sys.executable], args.threads),
             ("torchrun, 1 process", torchrun + ["--nproc_per_node", "1"], args.threads),
             (f"torchrun, {args.nproc} processes", torchrun + ["--nproc_per_node", str(args.nproc)],
              max(1, args.threads // args.nproc))]
    rows = []
    for label, launch, threads in plans:
        rows.append(run(label, launch, threads, cfg, args.expid, args.dataset, work, section["model_root"]))
        print(json.dumps(rows[-1]), flush=True)
    os.makedirs(args.results, exist_ok=True)
    result = {"expid": args.expid, "dataset": args.dataset, "epochs": args.epochs, "overrides": overrides,
              "batch_size": section["batch_size"], "cpus": os.cpu_count(), "runs": rows}
    path = os.path.join(args.results, f"{args.dataset}_{args.expid}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    metrics = list(rows[0]["test"])
    print(f"\n{args.expid} on {args.dataset}, {args.epochs} epoch(s), global batch {section['batch_size']}, "
          f"{os.cpu_count()} CPUs\n")
    print("| run | threads/process | train samples/s (per epoch) | " + " | ".join(f"test {m}" for m in metrics) + " |")
    print("|---|---|---|" + "---|" * len(metrics))
    for r in rows:
        print(f"| {r['run']} | {r['threads_per_process']} | {', '.join(f'{x:,.0f}' for x in r['samples_per_s'])} | "
              + " | ".join(f"{r['test'][m]:.6f}" for m in metrics) + " |")
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
