"""What a model's spare training time buys as seeds: test metrics of k-seed ensembles against training seconds.

    # the runs, with their checkpoints kept (evidence.py --keep-checkpoints), then
    python benchmarks/seed_ensembles.py --dataset movielens1m_x1_t30 \\
        --group InterFormer <key> <key> <key> --group "DIN (FuxiCTR)" <key> <key> <key>

A model that trains in a quarter of another's time can spend the rest on more seeds. Each run
(an evidence record, by its key) is loaded from its best checkpoint and scores the test split,
checked against the record's gAUC; the scores are kept next to the checkpoint
(``runs/<key>/test_scores.npy``) so a second call does not rescore. For every k, every k-subset of
a group's runs is averaged (the mean of their probabilities) and scored; the table gives the mean
over subsets and the training CPU-hours the k runs took (the records' train seconds per epoch ×
epochs × threads, evaluation excluded). Paired comparisons over users (95% bootstrap, as in
``gap_analysis.py``) put each group's full ensemble against every other group's single runs and
full ensemble. An ensemble is k models at serving time too: it is a use of the training budget,
reported next to the equal-epoch table, not in place of it.

Writes ``<results>/<dataset>/seed_ensembles.md``, ``.json`` and ``.png``.
"""
import argparse
import itertools
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gap_analysis import DEFAULT_RESULTS, check_rescored, load_record, paired_gap, score_test  # noqa: E402
from interformer_fuxi.errors import UserError, report  # noqa: E402
from interformer_fuxi.metrics import group_auc, logloss  # noqa: E402


def test_scores(record, config, results_dir):
    """A run's test scores ``[N]`` and the test split's labels and users, rescored once and then cached."""
    import pandas as pd

    cache = os.path.join(results_dir, "runs", record["key"], "test_scores.npz")
    if os.path.exists(cache):
        with np.load(cache, allow_pickle=False) as z:
            p, y, user = z["p"], z["y"], z["user"]
    else:
        p, params = score_test(record, config, results_dir)
        if not params.get("_test_csv"):
            raise UserError(f"{record['dataset']}: the test split's users are read from its CSV; this dataset has none")
        test = pd.read_csv(params["_test_csv"], usecols=["label", "user_id"], dtype=str, keep_default_na=False)
        y, user = test["label"].astype(float).to_numpy(), test["user_id"].to_numpy().astype(str)
        if len(p) != len(y):
            raise UserError(f"run {record['key']}: {len(p)} test scores for {len(y)} test rows")
        tmp = cache + ".tmp.npz"
        np.savez(tmp, p=p, y=y, user=user)
        os.replace(tmp, cache)
    check_rescored(record, y, p, user)
    return p, y, user


def metrics(y, p, user):
    from sklearn.metrics import roc_auc_score

    return dict(gAUC=float(group_auc(y, p, user)), AUC=float(roc_auc_score(y, p)), logloss=float(logloss(y, p)))


def train_cpu_seconds(record):
    """A run's training CPU-seconds: train seconds per epoch × epochs × torch threads (evaluation excluded).

    CPU-seconds, not wall seconds, so that runs on 1 and 2 threads compare; a run that shared the
    machine still counts its slower epochs.
    """
    threads = record.get("machine", {}).get("torch_threads", 1)
    return record["train_seconds_per_epoch"] * record["epochs_trained"] * threads


def ensembles(name, records, scores, y, user):
    """Per k: every k-subset's mean-probability metrics, averaged, and the k runs' training seconds."""
    train_s = [train_cpu_seconds(r) for r in records]
    rows = []
    for k in range(1, len(records) + 1):
        subsets = list(itertools.combinations(range(len(records)), k))
        each = [metrics(y, np.mean([scores[i] for i in s], axis=0), user) for s in subsets]
        rows.append(dict(group=name, k=k, subsets=len(subsets),
                         train_cpu_seconds=float(np.mean([sum(train_s[i] for i in s) for s in subsets])),
                         **{m: float(np.mean([e[m] for e in each])) for m in ("gAUC", "AUC", "logloss")},
                         gAUC_range=[float(min(e["gAUC"] for e in each)), float(max(e["gAUC"] for e in each))]))
    return rows


def markdown(table, pairs, dataset):
    f, s = (lambda v: f"{v:.4f}"), (lambda v: f"{v:+.4f}")
    lines = [f"Seed ensembles on `{dataset}` (mean of the k runs' probabilities; each row averages every k-subset "
             "of the group's seeds).", "",
             "| model | k seeds | subsets | test gAUC | gAUC range over subsets | test AUC | test logloss | "
             "training CPU-hours (the k runs) |",
             "|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in table:
        lines.append(f"| {r['group']} | {r['k']} | {r['subsets']} | {f(r['gAUC'])} | "
                     f"{f(r['gAUC_range'][0])}–{f(r['gAUC_range'][1])} | {f(r['AUC'])} | {f(r['logloss'])} | "
                     f"{r['train_cpu_seconds'] / 3600:.2f} |")
    lines += ["", "Paired over users (B − A test gAUC, 95% bootstrap interval; `*` where it excludes 0):", "",
              "| A | B | B − A | 95% interval | users |", "|---|---|---:|---|---:|"]
    for c in pairs:
        star = "*" if c["low"] > 0 or c["high"] < 0 else ""
        lines.append(f"| {c['A']} | {c['B']} | {s(c['diff'])}{star} | [{s(c['low'])}, {s(c['high'])}] | {c['users']} |")
    return "\n".join(lines) + "\n"


def chart(table, singles, path, dataset):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("gAUC", "AUC")):
        for i, name in enumerate(dict.fromkeys(r["group"] for r in table)):
            rows = [r for r in table if r["group"] == name]
            color = f"C{i}"
            ax.plot([r["train_cpu_seconds"] / 3600 for r in rows], [r[metric] for r in rows], "-o", color=color,
                    label=f"{name}, k = 1…{len(rows)} seeds")
            for r in rows:
                ax.annotate(f"k={r['k']}", (r["train_cpu_seconds"] / 3600, r[metric]), fontsize=7,
                            textcoords="offset points", xytext=(4, -10))
            ax.scatter([t / 3600 for t, _ in singles[name]], [m[metric] for _, m in singles[name]],
                       color=color, marker="x", alpha=0.6)
        ax.set_xlabel("training CPU-hours of the k runs (evaluation excluded)")
        ax.set_ylabel(f"test {metric}")
        ax.set_title(f"{dataset}: test {metric} against training time", fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--group", action="append", nargs="+", required=True, metavar=("NAME", "KEY"),
                        help="a label and the evidence run keys of its seeds (repeat per model)")
    parser.add_argument("--results", default=DEFAULT_RESULTS)
    parser.add_argument("--config", default=os.path.join(REPO, "config"))
    parser.add_argument("--threads", type=int, help="torch threads")
    args = parser.parse_args(argv)
    try:
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        if any(len(g) < 2 for g in args.group):
            raise UserError("--group: expected a label and at least one run key, e.g. --group InterFormer <key> <key>")
        results_dir = os.path.join(args.results, args.dataset)
        table, ensemble, runs, singles, y, user = [], {}, {}, {}, None, None
        for name, *keys in args.group:
            records = [load_record(results_dir, key) for key in keys]
            scored = [test_scores(r, args.config, results_dir) for r in records]
            for r, (_, y_r, user_r) in zip(records, scored):
                if y is None:
                    y, user = y_r, user_r
                elif not (np.array_equal(y_r, y) and np.array_equal(user_r, user)):
                    raise UserError(f"run {r['key']}: its test rows are not the other runs' (another dataset build?)")
            scores = [p for p, _, _ in scored]
            table += ensembles(name, records, scores, y, user)
            ensemble[name] = np.mean(scores, axis=0)
            runs[name] = [(r["seed"], p) for r, p in zip(records, scores)]
            singles[name] = [(train_cpu_seconds(r), metrics(y, p, user))
                             for r, p in zip(records, scores)]
            print(f"{name}: {len(keys)} runs scored")
        rng = np.random.default_rng(0)
        label = lambda name: f"{name}, {len(runs[name])}-seed ensemble"
        pairs = [dict(A=label(a), B=f"{b} seed {seed}", **paired_gap(y, ensemble[a], p, user, rng))
                 for a, b in itertools.permutations(ensemble, 2) for seed, p in runs[b]]
        pairs += [dict(A=label(a), B=label(b), **paired_gap(y, ensemble[a], ensemble[b], user, rng))
                  for a, b in itertools.combinations(ensemble, 2)]
        stem = os.path.join(results_dir, "seed_ensembles")
        text = markdown(table, pairs, args.dataset)
        with open(stem + ".md", "w") as f:
            f.write(text)
        with open(stem + ".json", "w") as f:
            json.dump(dict(dataset=args.dataset, groups={g[0]: g[1:] for g in args.group}, table=table,
                           pairs=pairs), f, indent=1)
        chart(table, singles, stem + ".png", args.dataset)
        print(text)
        print(f"written: {stem}.md, .json, .png")
    except UserError as exc:
        return report(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
