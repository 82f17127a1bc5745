"""Tables and charts of an evidence suite, from the cached runs (no training here).

Each entry's cell is the mean ± sample standard deviation (ddof 1) over its seeds. An entry
is compared with its reference entry metric by metric: a difference no larger than the
larger of the two standard deviations is a tie (``=``); otherwise it is better (``▲``) or
worse (``▼``) in that metric's direction. With fewer than two seeds on either side there is
no spread to compare with, and the mark is ``?``.
"""
import csv
import io
import math
import os

import numpy as np

METRICS = ("gAUC", "AUC", "logloss", "NE")
LOWER_IS_BETTER = {"logloss", "NE"}
SYMBOL = {"ref": "(ref)", "tie": "=", "better": "▲", "worse": "▼", "n/a": "?"}


def mark(metric, mean, std, n, ref_mean, ref_std, ref_n):
    """``tie`` / ``better`` / ``worse`` of an entry against its reference, or ``n/a``."""
    if n < 2 or ref_n < 2 or any(math.isnan(v) for v in (mean, std, ref_mean, ref_std)):
        return "n/a"
    diff = mean - ref_mean
    if abs(diff) <= max(std, ref_std):
        return "tie"
    better = diff < 0 if metric in LOWER_IS_BETTER else diff > 0
    return "better" if better else "worse"


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarize(records):
    """Aggregate the finished runs of one entry (records as the driver caches them)."""
    ok = [r for r in records if r.get("status") == "ok"]
    row = {"seeds_ok": len(ok), "seeds": len(records)}
    for m in METRICS:
        row[m], row[m + "_std"] = _mean_std([r["test"].get(m) for r in ok])
    row["params"] = ok[0]["num_params"] if ok else None
    row["s_per_epoch"], _ = _mean_std([r["train_seconds_per_epoch"] for r in ok])
    row["best_epoch"], _ = _mean_std([r["best_epoch"] for r in ok])
    row["epochs_trained"], _ = _mean_std([r["epochs_trained"] for r in ok])
    return row


def build_rows(suite, results, oracle=None):
    """One row per suite entry; ``results[name] = {"lr": .., "records": [..], "note": ..}``."""
    rows = []
    for entry in suite.entries:
        res = results.get(entry.name, {})
        row = {"entry": entry.name, "group": entry.group, "ref": suite.ref_of(entry),
               "lr": res.get("lr"), "note": res.get("note", "")}
        row.update(summarize(res.get("records", [])))
        if oracle and oracle.get("AUC"):
            row["AUC_of_oracle"] = row["AUC"] / oracle["AUC"]
        rows.append(row)
    by_name = {r["entry"]: r for r in rows}
    for row in rows:
        ref = by_name.get(row["ref"])
        for m in METRICS:
            if row["entry"] == row["ref"]:
                row[m + "_mark"] = "ref"
            elif ref is None:
                row[m + "_mark"] = "n/a"
            else:
                row[m + "_mark"] = mark(m, row[m], row[m + "_std"], row["seeds_ok"],
                                        ref[m], ref[m + "_std"], ref["seeds_ok"])
    return rows


def _cell(row, m):
    if row["seeds_ok"] == 0:
        return "—"
    return f"{row[m]:.4f} ± {row[m + '_std']:.4f} {SYMBOL[row[m + '_mark']]}"


def _num(value, fmt):
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def markdown(suite, rows, header_lines, oracle=None):
    cols = ["entry", "lr", "seeds", "test gAUC", "test AUC", "test logloss", "test NE"]
    if oracle:
        cols.append("AUC / oracle")
    cols += ["params", "train s/epoch", "epochs to best", "note"]
    out = [f"## {suite.title}", ""] + [f"- {line}" for line in header_lines] + [""]
    out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r["entry"], _num(r["lr"], "g"), f"{r['seeds_ok']}/{r['seeds']}"]
        cells += [_cell(r, m) for m in METRICS]
        if oracle:
            cells.append(_num(r.get("AUC_of_oracle"), ".4f"))
        cells += [_num(r["params"], ","), _num(r["s_per_epoch"], ".2f"),
                  _num(r["best_epoch"], ".1f"), r["note"]]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    if oracle:
        cells = ["oracle (true p)", "", ""] + [_num(oracle.get(m), ".4f") for m in METRICS]
        out.append("| " + " | ".join(cells + ["1.0000", "", "", "", ""]) + " |")
    out += ["", "Marks against each entry's reference (`ref` column of the CSV): "
            "`=` tie (difference within the larger seed std), `▲` better, `▼` worse, "
            "`?` fewer than two seeds. Std is over seeds (ddof 1).", ""]
    return "\n".join(out)


def to_csv(rows, oracle=None):
    fields = ["entry", "group", "ref", "lr", "seeds_ok", "seeds"]
    for m in METRICS:
        fields += [m, m + "_std", m + "_mark"]
    fields += (["AUC_of_oracle"] if oracle else []) + ["params", "s_per_epoch", "best_epoch",
                                                        "epochs_trained", "note"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    if oracle:
        writer.writerow({"entry": "oracle", **{m: oracle.get(m) for m in METRICS}, "AUC_of_oracle": 1.0})
    return buf.getvalue()


def chart(suite, rows, path, title, oracle=None):
    """Bar chart of ``suite.chart_metric`` (mean, error bar = std); fig2 groups by module."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = suite.chart_metric
    done = [r for r in rows if r["seeds_ok"] > 0]
    groups = list(dict.fromkeys(r["group"] for r in rows if r["group"]))
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * (2.5 * len(groups) if groups else len(rows)) + 2), 3.6))
    if oracle and oracle.get(metric):
        ax.axhline(oracle[metric], color="k", ls="--", lw=1, label="oracle")
    if groups:  # grouped bars: one cluster per group, one bar per label within it
        labels = list(dict.fromkeys(r["entry"].split("/", 1)[1] for r in rows))
        width = 0.8 / len(labels)
        for i, label in enumerate(labels):
            xs, ys, es = [], [], []
            for g, group in enumerate(groups):
                r = next((r for r in done if r["entry"] == f"{group}/{label}"), None)
                if r:
                    xs.append(g + (i - (len(labels) - 1) / 2) * width)
                    ys.append(r[metric])
                    es.append(r[metric + "_std"])
            ax.bar(xs, ys, width, yerr=es, capsize=2, label=label)
        ax.set_xticks(range(len(groups)), groups)
        ax.legend(fontsize=8, ncol=len(labels) + 1)
    else:
        names = [r["entry"] for r in rows]
        ys = [r[metric] if r["seeds_ok"] else np.nan for r in rows]
        es = [r[metric + "_std"] if r["seeds_ok"] else 0 for r in rows]
        ax.bar(range(len(rows)), ys, 0.6, yerr=es, capsize=3,
               color=["C1" if r["entry"] == suite.reference else "C0" for r in rows])
        ax.set_xticks(range(len(rows)), names, rotation=20, ha="right", fontsize=8)
        if oracle and oracle.get(metric):
            ax.legend(fontsize=8)
    values = [r[metric] for r in done] + ([oracle[metric]] if oracle and oracle.get(metric) else [])
    if values:  # zoom on the values: CTR metrics differ in the third decimal
        spread = max(max(values) - min(values), 1e-3)
        errs = max([r[metric + "_std"] for r in done] + [0])
        ax.set_ylim(min(values) - spread - errs, max(values) + spread + errs)
    ax.set_ylabel(f"test {metric}")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
