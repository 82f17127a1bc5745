"""The oracle hook: test metrics of the true click probabilities, on datasets that know them.

Interface (what a dataset provides): a CSV with one row per test row, in any order,
holding the columns

    p_true                 the true click probability of the row (in (0, 1))
    <label column>         the observed label (the dataset's ``label_col``)
    <group_id column>      optional; needed for gAUC (the dataset's ``group_id``)

named by ``oracle_file`` in the dataset's section of ``benchmarks/protocol.yaml`` (relative
to the project root). The test CSV itself qualifies when it carries a ``p_true`` column that
``feature_cols`` does not use. A dataset may instead name a Python function,
``oracle_hook: "module:function"``, called as ``function(params)`` with the dataset's resolved
parameters and returning a dict of metrics (gAUC, AUC, logloss, NE) or None.

``oracle_metrics(params, protocol)`` returns that dict, or None where there is no oracle.
NE uses the training CSV's mean label, as the models' NE does.
"""
import importlib
import os

import numpy as np
import pandas as pd

from interformer_fuxi.errors import UserError
from interformer_fuxi.metrics import evaluate_metrics

METRICS = ["gAUC", "AUC", "logloss", "NE"]


def oracle_metrics(params, protocol, project_root):
    hook = protocol.get("oracle_hook")
    if hook:
        module, _, func = hook.partition(":")
        return getattr(importlib.import_module(module), func)(params)
    path = protocol.get("oracle_file")
    if not path:
        return None
    path = path if os.path.isabs(path) else os.path.join(project_root, path)
    if not os.path.isfile(path):
        return None
    label = params["label_col"]["name"]
    group = params.get("group_id")
    frame = pd.read_csv(path)
    missing = [c for c in ("p_true", label) if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: oracle file lacks the column {missing[0]!r} (expected p_true and {label})")
    train_ctr = float(pd.read_csv(params["train_data"], usecols=[label])[label].mean())
    groups = frame[group].to_numpy() if group and group in frame.columns else None
    metrics = METRICS if groups is not None else [m for m in METRICS if m != "gAUC"]
    result = evaluate_metrics(frame[label].to_numpy(np.float64), frame["p_true"].to_numpy(np.float64),
                              metrics, groups, train_ctr)
    return {k: float(v) for k, v in result.items()}
