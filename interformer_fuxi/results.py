"""BARS result lines (what ``run_expid.py`` appends) -> per-trial metrics, ranked by the monitor.

A line looks like::

     20261127-230648,[command] python run_expid.py …,[exp_id] X,[dataset_id] D,[train] N.A.,[val] gAUC: 0.8 - AUC: 0.8,[test] …

The command may itself hold commas, so fields are found by their ``,[name] `` markers.
"""
import csv
import json
import os
import re

from .atomic import atomic_write

FIELD = re.compile(r",\[(command|exp_id|dataset_id|train|val|test)\] ")


def parse_metrics(text):
    """``"gAUC: 0.8 - AUC: 0.81"`` -> ``{"gAUC": 0.8, "AUC": 0.81}`` (``N.A.`` -> ``{}``)."""
    out = {}
    for part in (text or "").split(" - "):
        name, sep, value = part.partition(": ")
        if sep:
            try:
                out[name.strip()] = float(value)
            except ValueError:
                pass
    return out


def parse_line(line):
    """One result line -> dict(time, command, exp_id, dataset_id, val, test, line); None if malformed."""
    line = line.rstrip("\n")
    marks = list(FIELD.finditer(line))
    if not marks or marks[0].group(1) != "command":
        return None
    fields = {"time": line[:marks[0].start()].strip(), "line": line}
    for mark, nxt in zip(marks, marks[1:] + [None]):
        fields[mark.group(1)] = line[mark.end():nxt.start() if nxt else len(line)]
    if "exp_id" not in fields:
        return None
    fields["val"] = parse_metrics(fields.get("val"))
    fields["test"] = parse_metrics(fields.get("test"))
    return fields


def read_results(path):
    """``{exp_id: parsed line}`` from a results CSV; a later line of the same expid wins."""
    results = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                parsed = parse_line(line)
                if parsed:
                    results[parsed["exp_id"]] = parsed
    return results


def monitor_score(metrics, monitor):
    """FuxiCTR's monitor value: one metric, or the weighted sum ``{gAUC: 1, AUC: 1}``."""
    if isinstance(monitor, str):
        monitor = {monitor: 1}
    if not isinstance(monitor, dict) or not monitor:
        return None
    if any(name not in metrics for name in monitor):
        return None
    return sum(weight * metrics[name] for name, weight in monitor.items())


def rank(rows, monitor, mode="max"):
    """``rows`` (dicts with ``val``) sorted best first by the monitor on validation; rows
    without a score (failed, not run) keep their order at the end."""
    scored = [(monitor_score(r.get("val") or {}, monitor), i, r) for i, r in enumerate(rows)]
    sign = -1 if mode == "max" else 1
    done = sorted((s for s in scored if s[0] is not None), key=lambda s: (sign * s[0], s[1]))
    rest = [s for s in scored if s[0] is None]
    out = []
    for score, _, row in done + rest:
        row = dict(row)
        row["monitor"] = score
        out.append(row)
    return out


def format_value(value):
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def summary_table(ranked, metric_names, tuned_keys):
    """Header and rows (lists of strings) for the printed and CSV summaries."""
    header = (["rank", "exp_id", "status", "monitor"] + [f"val_{m}" for m in metric_names]
              + [f"test_{m}" for m in metric_names] + list(tuned_keys) + ["dataset_id", "log"])
    rows = []
    for i, r in enumerate(ranked, start=1):
        fmt = lambda d, m: f"{d[m]:.6f}" if m in (d or {}) else ""
        rows.append([str(i) if r["monitor"] is not None else "", r["exp_id"], r["status"],
                     f"{r['monitor']:.6f}" if r["monitor"] is not None else ""]
                    + [fmt(r.get("val"), m) for m in metric_names]
                    + [fmt(r.get("test"), m) for m in metric_names]
                    + [format_value(r["tuned"].get(k, "")) for k in tuned_keys]
                    + [r.get("dataset_id", ""), r.get("log", "")])
    return header, rows


def write_csv_atomic(path, header, rows):
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def format_table(header, rows, skip=("log",)):
    """A plain-text table of ``rows`` for the terminal (without the long ``skip`` columns)."""
    keep = [i for i, h in enumerate(header) if h not in skip]
    cells = [[header[i] for i in keep]] + [[row[i] for i in keep] for row in rows]
    widths = [max(len(c[j]) for c in cells) for j in range(len(keep))]
    return "\n".join("  ".join(c[j].ljust(widths[j]) for j in range(len(keep))).rstrip() for c in cells)

