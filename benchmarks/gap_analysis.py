"""Where two trained models part: test gAUC by history length, item popularity and genre match.

    # the two runs, with their checkpoints kept
    python benchmarks/evidence.py --suite realdata --dataset movielens1m_x1_u1000 \\
        --entries InterFormer DIN --seeds 1 --keep-checkpoints --model-zoo <FuxiCTR>/model_zoo
    python benchmarks/gap_analysis.py --dataset movielens1m_x1_u1000 --runs <key A> <key B>

Each run (an evidence record, by its key) is loaded from its best checkpoint and scores the
test split. The script first checks that its own gAUC of those scores is the record's, so
the rows it slices are the rows the table reports. Then, for slices of the test rows (the
history's length; the target item's number of training rows; the share of the history in the
target's genre), it gives each model's gAUC and AUC, B − A, and a 95% interval of B − A from
a paired bootstrap over users (the unit gAUC averages over). A slice whose interval excludes 0
is where the gap is; one seed's models are compared, so the interval covers the test sample's
noise, not the seeds'. The blend (the mean of the two probabilities) says whether the two
models rank the rows differently enough to add up.

Writes ``<results>/<dataset>/gap_<A>_<B>.md``, ``.json`` and ``.png``.
"""
import argparse
import json
import os
import sys

import numpy as np
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from interformer_fuxi.errors import UserError, report  # noqa: E402
from interformer_fuxi.metrics import group_auc, group_aucs  # noqa: E402

DEFAULT_RESULTS = os.path.join(REPO, "benchmarks", "results")
BOOTSTRAP = 2000


def load_record(results_dir, key):
    path = os.path.join(results_dir, f"{key}.json")
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        raise UserError(f"{path}: no readable evidence record for run {key!r}") from None
    if record.get("status") != "ok":
        raise UserError(f"{path}: run {key!r} did not finish ({record.get('error', record.get('status'))})")
    return record


def score_test(record, config, results_dir):
    """The test split's scores ``[N]`` of a run's best checkpoint, in the split's row order, and its params."""
    from interformer_fuxi.runner import load_split, load_trained

    run_dir = os.path.join(results_dir, "runs", record["key"])
    overrides = dict(record["overrides"], model_root=run_dir, verbose=0)
    try:
        params, feature_map, model = load_trained(config, record["template"], overrides=overrides)
    except UserError as exc:
        raise UserError(f"{exc} (rerun it with evidence.py --keep-checkpoints)") from None
    return model.predict(load_split(feature_map, params, "test")), params


def check_rescored(record, y, p, user):
    """The rescored test gAUC, refused unless it is the record's: the rows analysed are the rows reported."""
    ours = group_auc(y, p, user)
    if abs(ours - record["test"]["gAUC"]) > 1e-4:
        raise UserError(f"run {record['key']}: the rescored test gAUC {ours:.6f} is not the record's "
                        f"{record['test']['gAUC']:.6f}; the checkpoint or the test rows changed")
    return ours


def row_features(test_csv, train_csv, sequence, target, history_genre, genre):
    """Per test row: label, user, history length, the target's training rows, genre share."""
    test = pd.read_csv(test_csv, dtype=str, keep_default_na=False)
    train_items = pd.read_csv(train_csv, usecols=[target], dtype=str, keep_default_na=False)[target]
    lengths = test[sequence].map(lambda s: 0 if s == "" else s.count("^") + 1)
    share = [np.mean(np.array(h.split("^")) == g) if h else 0.0
             for h, g in zip(test[history_genre], test[genre])]
    return pd.DataFrame({"label": test["label"].astype(float).to_numpy(),
                         "user": test["user_id"].to_numpy(),
                         "history_length": lengths.to_numpy(),
                         "item_rows": test[target].map(train_items.value_counts()).fillna(0).to_numpy(),
                         "genre_share": np.asarray(share)})


def paired_gap(y, p_a, p_b, user, rng, draws=BOOTSTRAP):
    """gAUC of A and of B over the same rows, B − A and its 95% paired-bootstrap interval over users.

    Per-user AUCs of both models share their users (which users hold both classes depends on
    the labels only); resampling users with replacement keeps each user's pair together.
    """
    a, b = group_aucs(y, p_a, user), group_aucs(y, p_b, user)
    n = a["n"].to_numpy(float)
    if n.size == 0:
        return dict(users=0, gAUC_A=np.nan, gAUC_B=np.nan, diff=np.nan, low=np.nan, high=np.nan)
    diff = b["auc"].to_numpy() - a["auc"].to_numpy()
    idx = rng.integers(0, n.size, size=(draws, n.size))
    boot = (n[idx] * diff[idx]).sum(1) / n[idx].sum(1)
    return dict(users=int(n.size), gAUC_A=float((a["auc"] * a["n"]).sum() / n.sum()),
                gAUC_B=float((b["auc"] * b["n"]).sum() / n.sum()), diff=float((diff * n).sum() / n.sum()),
                low=float(np.percentile(boot, 2.5)), high=float(np.percentile(boot, 97.5)))


def slices(rows):
    """``(slicing, [(name, mask)])``: buckets of history length, item popularity and genre share."""
    length, items, share = rows["history_length"], rows["item_rows"], rows["genre_share"]
    popularity = np.quantile(items, [0.25, 0.5, 0.75]).astype(int)
    return [
        ("history length", [("1–24", (length >= 1) & (length < 25)), ("25–49", (length >= 25) & (length < 50)),
                            ("50–99", (length >= 50) & (length < 100)), ("100 (capped)", length >= 100)]),
        ("target item's training rows (quartiles)",
         [(f"≤ {popularity[0]}", items <= popularity[0]),
          (f"{popularity[0] + 1}–{popularity[1]}", (items > popularity[0]) & (items <= popularity[1])),
          (f"{popularity[1] + 1}–{popularity[2]}", (items > popularity[1]) & (items <= popularity[2])),
          (f"> {popularity[2]}", items > popularity[2])]),
        ("history share in the target's genre", [("0", share == 0), ("(0, .1]", (share > 0) & (share <= 0.1)),
                                                  ("(.1, .3]", (share > 0.1) & (share <= 0.3)), ("> .3", share > 0.3)]),
    ]


def analyse(rows, p_a, p_b, seed=0):
    """Every slice's paired gap (B − A), plus the whole test split and the blend."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    y, user = rows["label"].to_numpy(), rows["user"].to_numpy()
    out = {"all": dict(paired_gap(y, p_a, p_b, user, rng), rows=len(y),
                       AUC_A=float(roc_auc_score(y, p_a)), AUC_B=float(roc_auc_score(y, p_b)))}
    blend = (p_a + p_b) / 2
    out["blend"] = dict(paired_gap(y, p_b, blend, user, rng), rows=len(y), AUC=float(roc_auc_score(y, blend)))
    out["slices"] = []
    for slicing, buckets in slices(rows):
        for name, mask in buckets:
            mask = np.asarray(mask)
            cell = dict(slicing=slicing, bucket=name, rows=int(mask.sum()))
            if mask.any():
                cell.update(paired_gap(y[mask], p_a[mask], p_b[mask], user[mask], rng))
                if 0 < y[mask].sum() < mask.sum():
                    cell.update(AUC_A=float(roc_auc_score(y[mask], p_a[mask])),
                                AUC_B=float(roc_auc_score(y[mask], p_b[mask])))
            out["slices"].append(cell)
    return out


def markdown(result, name_a, name_b):
    f = lambda v: "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"
    s = lambda v: "—" if v is None or np.isnan(v) else f"{v:+.4f}"
    whole, blend = result["all"], result["blend"]
    lines = [f"A = {name_a}, B = {name_b}; B − A with a 95% paired bootstrap interval over users "
             f"({BOOTSTRAP} draws); `*` where the interval excludes 0.", "",
             f"Whole test split ({whole['rows']:,} rows, {whole['users']} users): gAUC A {f(whole['gAUC_A'])}, "
             f"B {f(whole['gAUC_B'])}, B − A {s(whole['diff'])} [{s(whole['low'])}, {s(whole['high'])}]; "
             f"AUC A {f(whole['AUC_A'])}, B {f(whole['AUC_B'])}.",
             f"Blend (mean of the two probabilities): gAUC {f(blend['gAUC_B'])}, AUC {f(blend['AUC'])}; "
             f"blend − B {s(blend['diff'])} [{s(blend['low'])}, {s(blend['high'])}].", "",
             "| slice | bucket | rows | users | gAUC A | gAUC B | B − A | 95% interval | AUC A | AUC B |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for c in result["slices"]:
        star = "*" if c.get("users") and (c["low"] > 0 or c["high"] < 0) else ""
        lines.append(f"| {c['slicing']} | {c['bucket']} | {c['rows']:,} | {c.get('users', 0)} | {f(c.get('gAUC_A'))} | "
                     f"{f(c.get('gAUC_B'))} | {s(c.get('diff', np.nan))}{star} | "
                     f"[{s(c.get('low', np.nan))}, {s(c.get('high', np.nan))}] | {f(c.get('AUC_A'))} | {f(c.get('AUC_B'))} |")
    return "\n".join(lines) + "\n"


def chart(result, path, name_a, name_b):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {}
    for c in result["slices"]:
        groups.setdefault(c["slicing"], []).append(c)
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.6))
    for ax, (slicing, cells) in zip(np.atleast_1d(axes), groups.items()):
        cells = [c for c in cells if c.get("users")]
        x = np.arange(len(cells))
        diff = np.array([c["diff"] for c in cells])
        err = np.array([[c["diff"] - c["low"] for c in cells], [c["high"] - c["diff"] for c in cells]])
        ax.bar(x, diff, yerr=err, capsize=4, color=["tab:red" if d < 0 else "tab:blue" for d in diff])
        ax.axhline(0, color="black", lw=0.8)
        ax.axhline(result["all"]["diff"], color="gray", ls="--", lw=0.8, label="whole test split")
        ax.set_xticks(x, [f"{c['bucket']}\n{c['rows']:,} rows" for c in cells], fontsize=8)
        ax.set_title(slicing, fontsize=9)
    np.atleast_1d(axes)[0].set_ylabel(f"test gAUC, {name_b} − {name_a}\n(95% interval over users)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--runs", nargs=2, required=True, metavar=("A", "B"), help="two evidence run keys")
    parser.add_argument("--names", nargs=2, metavar=("A", "B"), help="labels (default: the records' entries)")
    parser.add_argument("--results", default=DEFAULT_RESULTS)
    parser.add_argument("--config", default=os.path.join(REPO, "config"))
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument("--sequence", default="item_history", help="the item history column")
    parser.add_argument("--target", default="item_id", help="the target item column")
    parser.add_argument("--genre-history", default="genre_history", help="the history's category column")
    parser.add_argument("--genre", default="genre", help="the target's category column")
    args = parser.parse_args(argv)
    try:
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        results_dir = os.path.join(args.results, args.dataset)
        records = [load_record(results_dir, key) for key in args.runs]
        scored = [score_test(r, args.config, results_dir) for r in records]
        scores, params = [p for p, _ in scored], scored[0][1]
        if not params.get("_test_csv"):
            raise UserError(f"{args.dataset}: the analysis reads the test rows' CSV; this dataset has none")
        rows = row_features(params["_test_csv"], params["_train_csv"], args.sequence, args.target,
                            args.genre_history, args.genre)
        for record, p in zip(records, scores):
            if len(p) != len(rows):
                raise UserError(f"run {record['key']}: {len(p)} test scores for {len(rows)} test rows")
            ours = check_rescored(record, rows["label"], p, rows["user"])
            print(f"{record['entry']} ({record['key']}): gAUC of the rescored test split {ours:.6f}, "
                  f"the record's {record['test']['gAUC']:.6f}")
        result = analyse(rows, *scores)
        names = args.names or [r["entry"] for r in records]
        result.update(runs=args.runs, entries=names, dataset=args.dataset)
        stem = os.path.join(results_dir, f"gap_{args.runs[0]}_{args.runs[1]}")
        text = markdown(result, *names)
        with open(stem + ".md", "w") as f:
            f.write(text)
        with open(stem + ".json", "w") as f:
            json.dump(result, f, indent=1, default=float)
        chart(result, stem + ".png", *names)
        print(text)
        print(f"written: {stem}.md, .json, .png")
    except UserError as exc:
        return report(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
