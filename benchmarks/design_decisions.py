"""Decide SPEC's *(measure)* defaults by experiment: each variant over several seeds.

    python benchmarks/design_decisions.py [--expid InterFormer_tiny] [--seeds 1 2 3] [--workers 2]
                                          [--set key=value ...] [--only VARIANT ...]

Each variant overrides the expid's settings (after the ``--set`` ones, which apply to all);
every run trains through the project's runner (early stopping on validation, metrics on test) and the script prints one Markdown table of
test metrics as mean ± std over the seeds, plus the parameter count and seconds per run.
"""
import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

VARIANTS = {
    "default (highway gating, residual+norm, token norm, init std 0.05)": {},
    "gating_form: paper": {"gating_form": "paper"},
    "gating_form: paper, tanh": {"gating_form": "paper", "gating_activation": "tanh"},
    "use_gating: false": {"use_gating": False},
    "residual_norm: false": {"residual_norm": False},
    "token_norm: false": {"token_norm": False},
    "init std 1e-4 (FuxiCTR's default)": {"embedding_initializer": "partial(nn.init.normal_, std=1e-4)"},
    "pffn_form: mlp": {"pffn_form": "mlp"},
    "interleave_mode: sole (mean)": {"interleave_mode": "sole"},
}


def one_run(job):
    import torch
    torch.set_num_threads(1)
    from interformer_fuxi.runner import run_expid
    config, expid, overrides, seed, root = job
    start = time.time()
    _, model, _, test = run_expid(config, expid, overrides=dict(
        overrides, seed=seed, verbose=0, model_root=os.path.join(root, f"{os.getpid()}-{seed}")))
    return test, model.count_parameters(), time.time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(REPO, "config"))
    parser.add_argument("--expid", default="InterFormer_tiny")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="settings for every variant, values in YAML (e.g. early_stop_patience=2)")
    args = parser.parse_args()
    common = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    variants = {k: dict(common, **v) for k, v in VARIANTS.items() if not args.only or k in args.only}
    with tempfile.TemporaryDirectory() as root:
        jobs = [(args.config, args.expid, v, s, root) for v in variants.values() for s in args.seeds]
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(one_run, jobs))
    print(f"\n{args.expid} {' '.join(args.set)}, seeds {args.seeds}: test metrics, mean ± std\n")
    print("| variant | AUC | gAUC | logloss | NE | params | s/run |\n|---|---|---|---|---|---|---|")
    for i, name in enumerate(variants):
        runs = results[i * len(args.seeds):(i + 1) * len(args.seeds)]
        cell = lambda m: f"{np.mean([r[0][m] for r in runs]):.4f} ± {np.std([r[0][m] for r in runs]):.4f}"
        print(f"| {name} | {cell('AUC')} | {cell('gAUC')} | {cell('logloss')} | {cell('NE')} | "
              f"{runs[0][1]:,} | {np.mean([r[2] for r in runs]):.0f} |")


if __name__ == "__main__":
    main()
