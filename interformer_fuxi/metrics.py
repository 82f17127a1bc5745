"""CTR metrics: AUC, gAUC and logloss as FuxiCTR 2.0 computes them, plus NE.

gAUC follows FuxiCTR (the DIN paper's definition): each group's (user's) AUC weighted by
the group's sample count, skipping groups with one class only. It is computed here in one
vectorised pass (ranks within groups) instead of FuxiCTR's process pool, with identical
results (ties get average ranks, as in ``roc_auc_score``).

NE (normalized entropy, He et al. 2014) is the logloss divided by the entropy of the
*training* set's mean CTR ``p``: ``-(p log p + (1 - p) log(1 - p))``.
"""
from collections import OrderedDict

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from .errors import UserError

SUPPORTED_METRICS = ("AUC", "gAUC", "logloss", "binary_crossentropy", "NE")
_EPS = 1e-7  # FuxiCTR 2.0's clipping for logloss


def logloss(y_true, y_pred):
    y_pred = np.clip(np.asarray(y_pred, dtype=np.float64), _EPS, 1 - _EPS)
    return float(log_loss(y_true, y_pred, labels=[0, 1]))


def entropy(p):
    """Binary entropy in nats of a click-through rate ``p`` in (0, 1)."""
    return float(-(p * np.log(p) + (1 - p) * np.log(1 - p)))


def normalized_entropy(y_true, y_pred, train_ctr):
    """NE = logloss / entropy(train_ctr); below 1 means better than predicting the mean CTR."""
    if train_ctr is None:
        raise UserError("metric NE needs the training set's mean CTR, which is unknown here "
                        "(train the model first or pass train_ctr)")
    if not 0.0 < train_ctr < 1.0:
        raise UserError(f"metric NE is undefined: the training set's mean CTR is {train_ctr} "
                        "(it needs both clicks and non-clicks)")
    return logloss(y_true, y_pred) / entropy(train_ctr)


def group_aucs(y_true, y_pred, group_id):
    """Per group that holds both classes: its AUC and sample count (columns ``auc``, ``n``)."""
    df = pd.DataFrame({"g": np.asarray(group_id), "y": np.asarray(y_true, dtype=np.float64),
                       "p": np.asarray(y_pred, dtype=np.float64)})
    df["rank"] = df.groupby("g")["p"].rank(method="average")
    stats = df.groupby("g").agg(n=("y", "size"), pos=("y", "sum"))
    stats["pos_rank"] = df[df["y"] > 0].groupby("g")["rank"].sum()
    stats = stats[(stats["pos"] > 0) & (stats["pos"] < stats["n"])]
    neg = stats["n"] - stats["pos"]
    stats["auc"] = (stats["pos_rank"] - stats["pos"] * (stats["pos"] + 1) / 2) / (stats["pos"] * neg)
    return stats[["auc", "n"]]


def group_auc(y_true, y_pred, group_id):
    """Sample-weighted mean of per-group AUC over groups that hold both classes."""
    stats = group_aucs(y_true, y_pred, group_id)
    if stats.empty:
        return 0.0
    return float((stats["auc"] * stats["n"]).sum() / stats["n"].sum())


def evaluate_metrics(y_true, y_pred, metrics, group_id=None, train_ctr=None):
    """Compute ``metrics`` (names from ``SUPPORTED_METRICS``) in the order given."""
    results = OrderedDict()
    for metric in metrics:
        if metric in ("logloss", "binary_crossentropy"):
            results[metric] = logloss(y_true, y_pred)
        elif metric == "AUC":
            results[metric] = float(roc_auc_score(y_true, y_pred))
        elif metric == "gAUC":
            if group_id is None:
                raise UserError("metric gAUC needs a group id: set `group_id` (e.g. user_id) "
                                "in the dataset config")
            results[metric] = group_auc(y_true, y_pred, group_id)
        elif metric == "NE":
            results[metric] = normalized_entropy(y_true, y_pred, train_ctr)
        else:
            raise UserError(f"metrics: unknown metric {metric!r}; "
                            f"supported: {', '.join(SUPPORTED_METRICS)}")
    return results
