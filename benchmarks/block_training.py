"""Training memory with H5 blocks (``data_block_size``) against a split held in memory.

    python benchmarks/block_training.py [--rows 300000] [--block 50000] [--scratch /tmp/block_training]

Generates (once) TaobaoAd_x1-schema CSVs of ``--rows`` training rows with
``benchmarks/build_scale.py``'s generator, builds them twice with the streaming builder (one
``train.h5``; ``train/part_<k>.h5`` blocks of ``--block`` rows), and trains one epoch of
``InterFormer_taobao_tiny`` (global batch 2048) on each, in a fresh process per mode:

- ``in memory``: FuxiCTR's ``H5DataLoader`` (the whole split as one tensor);
- ``blocks``: FuxiCTR's ``H5BlockDataLoader`` (one block at a time), as ``run_expid.py`` picks
  it for block data; and, with ``--ddp``, the same blocks under ``torchrun`` with two gloo
  ranks, each reading only its rows of each block.

The process's resident memory is sampled every 0.25 s during the epoch (``/proc/<pid>/status``,
``VmRSS``; the ranks summed under torchrun). Printed: RSS at 10%, 50% and 90% of the epoch
and its peak, per mode; JSON in ``benchmarks/results/block_training/``.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
sys.path.insert(0, os.path.join(REPO, "data"))

RESULTS = os.path.join(REPO, "benchmarks", "results", "block_training")
MODEL = dict(epochs=1, batch_size=2048, verbose=0, early_stop_patience=2)


def build(folder, out_root, block):
    from build_scale import dataset_params
    from interformer_fuxi.columns import feature_columns
    from interformer_fuxi.stream_build import build_streaming

    params = dataset_params(folder, out_root)
    params.update(data_block_size=block)
    if not os.path.isfile(os.path.join(out_root, params["dataset_id"], "feature_map.json")):
        build_streaming(dict(params, feature_cols=feature_columns(params)), params)
    return params


def config(work, params, block):
    """A config dir: the built H5 (``data_format: h5``) and InterFormer_taobao_tiny's model keys."""
    from ddp_scaling import write_config
    from interformer_fuxi.config import read_sections

    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    split = (lambda name: os.path.join(data_dir, name, "*.h5")) if block else \
        (lambda name: os.path.join(data_dir, name + ".h5"))
    dataset = dict(params, data_format="h5", train_data=split("train"), valid_data=split("valid"),
                   test_data=split("test"))
    for key in ("csv_header", "data_block_size", "dataset_id"):
        dataset.pop(key, None)
    models = read_sections(os.path.join(REPO, "config"), "model_config")
    model = dict(models["InterFormer_taobao_tiny"], dataset_id=params["dataset_id"],
                 model_root=os.path.join(work, "checkpoints"), **MODEL)
    return write_config(work, {"Base": models["Base"], "InterFormer_block": model}, {params["dataset_id"]: dataset})


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def tree(pid):
    """``pid`` and its descendants (torchrun's agent and its ranks)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def log_time(line):
    """Seconds since the epoch of a log line ``2026-12-06 09:00:00,123 P1 INFO ...`` (local time)."""
    return time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000


def train(label, cfg, work, ddp):
    """One epoch in a fresh process; RSS samples between the epoch's start and end log lines."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if ddp \
        else [sys.executable]
    env = dict(os.environ, OMP_NUM_THREADS="1" if ddp else os.environ.get("OMP_NUM_THREADS", "2"), PYTHONPATH=REPO)
    out_path = os.path.join(work, label.replace(" ", "_") + ".out")
    with open(out_path, "w") as out:
        proc = subprocess.Popen(launch + [os.path.join(REPO, "run_expid.py"), "--config", cfg, "--expid",
                                          "InterFormer_block", "--gpu", "-1", "--fresh"],
                                cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
        samples = []
        while proc.poll() is None:
            samples.append((time.time(), rss_kb(tree(proc.pid)) / 1024))
            time.sleep(0.25)
    if proc.returncode:
        raise SystemExit(f"{label}: failed, see {out_path}")
    text = open(out_path).read()
    start = end = None
    for line in text.splitlines():
        if "Epoch=1 start" in line:
            start = log_time(line)
        if "Evaluation @epoch 1" in line and start is not None:
            end = log_time(line)
    epoch = [(t, m) for t, m in samples if start <= t <= end]
    marks = {f"rss_mb_{q}%": round(epoch[min(len(epoch) - 1, int(len(epoch) * q / 100))][1]) for q in (10, 50, 90)}
    rate = [l for l in text.splitlines() if "samples/s" in l]
    return {"mode": label, **marks, "rss_mb_peak_epoch": round(max(m for _, m in epoch)),
            "rss_mb_peak_run": round(max(m for _, m in samples)), "epoch_s": round(end - start, 1),
            "samples_per_s": rate[-1].split(": ")[-1].split(" ")[0] if rate else None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--block", type=int, default=50_000)
    parser.add_argument("--scratch", default=os.path.join(tempfile.gettempdir(), "block_training"))
    parser.add_argument("--ddp", action="store_true", help="also two gloo ranks on the blocks")
    parser.add_argument("--results", default=RESULTS)
    args = parser.parse_args(argv)
    from build_scale import generate

    folder = os.path.join(args.scratch, f"csv_{args.rows}")
    print(f"generating {args.rows:,} rows: {generate(folder, args.rows):.0f} s", flush=True)
    rows = []
    modes = [("in memory", 0, False), (f"blocks of {args.block:,}", args.block, False)]
    if args.ddp:
        modes.append((f"blocks of {args.block:,}, 2 gloo ranks", args.block, True))
    for label, block, ddp in modes:
        params = build(folder, os.path.join(args.scratch, f"h5_{args.rows}_{block}"), block)
        work = tempfile.mkdtemp(prefix="run_", dir=args.scratch)
        rows.append(train(label, config(work, params, block), work, ddp))
        print(json.dumps(rows[-1]), flush=True)
    os.makedirs(args.results, exist_ok=True)
    path = os.path.join(args.results, f"{args.rows}_{args.block}.json")
    with open(path, "w") as f:
        json.dump({"rows": args.rows, "block": args.block, "model": "InterFormer_taobao_tiny", **MODEL,
                   "runs": rows}, f, indent=1)
    print(f"\n{args.rows:,} TaobaoAd_x1-schema training rows, one epoch of InterFormer_taobao_tiny, batch 2048\n")
    print("| loader | RSS at 10% / 50% / 90% of the epoch (MB) | peak in the epoch | peak in the run | epoch s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['rss_mb_10%']:,} / {r['rss_mb_50%']:,} / {r['rss_mb_90%']:,} | "
              f"{r['rss_mb_peak_epoch']:,} | {r['rss_mb_peak_run']:,} | {r['epoch_s']} |")
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
