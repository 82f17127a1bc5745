"""The columns a dataset config names: features (name lists expanded), labels, CSV sources.

The bottom of the data modules: ``validate``, the builders and ``predict`` read columns from
here, so that no two of them import each other.
"""
import re


def feature_columns(params):
    """The configured feature columns, one dict per column (FuxiCTR allows name lists)."""
    cols = []
    for col in params.get("feature_cols") or []:
        names = col["name"] if isinstance(col["name"], list) else [col["name"]]
        for name in names:
            cols.append(dict(col, name=name, active=col.get("active", True)))
    return cols


def label_columns(params):
    labels = params.get("label_col") or []
    return labels if isinstance(labels, list) else [labels]


def copy_source(col):
    """``x`` for a column with ``preprocess: copy_from(x)``, else None."""
    match = re.fullmatch(r"\s*copy_from\((\w+)\)\s*", str(col.get("preprocess") or ""))
    return match.group(1) if match else None


def required_columns(params):
    """CSV columns the build reads: configured ones, sources of ``copy_from`` ones, labels."""
    names = []
    for col in label_columns(params) + feature_columns(params):
        name = copy_source(col) or col["name"] if col.get("preprocess") else col["name"]
        if name not in names:
            names.append(name)
    return names
