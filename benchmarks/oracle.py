"""The evidence tables' oracle: test metrics of the true click probabilities, where known.

A dataset knows them when its section in ``config/dataset_config.yaml`` names
``oracle_data`` (a CSV with column ``p_true``, one row per test row, in order; written by
``data/make_synthetic.py``); the metrics are computed by :mod:`interformer_fuxi.oracle`, the
same code the runner uses to log them. A dataset may instead name a Python function in
``benchmarks/protocol.yaml``, ``oracle_hook: "module:function"``, called as
``function(params)`` with the dataset's resolved parameters and returning a dict of metrics
or None.

``oracle_metrics(params, protocol)`` returns that dict (gAUC, AUC, logloss, NE), or None
where there is no oracle (or its file is not generated yet).
"""
import importlib
import os

from interformer_fuxi import oracle

METRICS = ["gAUC", "AUC", "logloss", "NE"]


def oracle_metrics(params, protocol):
    hook = protocol.get("oracle_hook")
    if hook:
        module, _, func = hook.partition(":")
        return getattr(importlib.import_module(module), func)(params)
    path = params.get("oracle_data")
    if not path or not os.path.isfile(path):
        return None
    metrics = METRICS if params.get("group_id") else [m for m in METRICS if m != "gAUC"]
    return {k: float(v) for k, v in oracle.oracle_metrics(dict(params, metrics=metrics)).items()}
