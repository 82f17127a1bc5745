"""Oracle metrics on data with a known click probability (data/make_synthetic.py).

A dataset with ``oracle_data: <csv with column p_true>`` (one row per test row, same
order) has a best achievable score: the metrics of the true probability itself. The runner
logs them after the test evaluation; this tool prints them beside a trained model's, with
the model's share of the achievable: ``(AUC - 0.5) / (AUC* - 0.5)`` and
``(1 - NE) / (1 - NE*)`` (* = oracle).

Usage: ``python -m interformer_fuxi.oracle --expid InterFormer_synthetic [--config DIR] [--gpu -1]``.
"""
import argparse
import logging
import os
import sys

import pandas as pd

from .errors import UserError, report
from .metrics import evaluate_metrics


def oracle_metrics(params):
    """The metrics of ``p_true`` on the test CSV, in the expid's metric order."""
    path = params.get("oracle_data")
    if not path:
        raise UserError(f"{params['dataset_id']}: no oracle_data in dataset_config (only generated "
                        "data, e.g. synthetic_x1, knows its true click probability)")
    if not os.path.isfile(path):
        raise UserError(f"{params['dataset_id']}: oracle_data file not found: {path}")
    test_csv = params.get("_test_csv") or params["test_data"]
    label = _label(params)
    group = params.get("group_id")
    test = pd.read_csv(test_csv, usecols=[label] + ([group] if group else []))
    p_true = pd.read_csv(path)["p_true"].to_numpy()
    if len(p_true) != len(test):
        raise UserError(f"{path}: {len(p_true)} rows of p_true but {len(test)} rows in {test_csv}")
    return evaluate_metrics(test[label].to_numpy(), p_true, params["metrics"],
                            group_id=test[group].to_numpy() if group else None, train_ctr=train_ctr(params))


def _label(params):
    labels = params["label_col"]
    return (labels if isinstance(labels, dict) else labels[0])["name"]


def train_ctr(params):
    """The training CSV's mean label (NE's reference)."""
    path = params.get("_train_csv") or params["train_data"]
    return float(pd.read_csv(path, usecols=[_label(params)])[_label(params)].mean())


def share_of_oracle(model, oracle):
    """The model's fraction of the achievable AUC / gAUC lift over 0.5 and NE reduction below 1."""
    shares = {}
    for key in ("AUC", "gAUC"):
        if key in model and key in oracle and oracle[key] > 0.5:
            shares[key] = (model[key] - 0.5) / (oracle[key] - 0.5)
    if "NE" in model and "NE" in oracle and oracle["NE"] < 1:
        shares["NE"] = (1 - model["NE"]) / (1 - oracle["NE"])
    return shares


def fmt(results):
    return " - ".join(f"{k}: {v:.6f}" for k, v in results.items())


def log_oracle(params, test_result):
    """Log the oracle's metrics and the model's share of them (runner, after the test)."""
    oracle = oracle_metrics(params)
    logging.info("[Oracle] %s", fmt(oracle))
    shares = share_of_oracle(test_result, oracle)
    if shares:
        logging.info("[Share of oracle] %s", " - ".join(f"{k}: {v:.1%}" for k, v in shares.items()))
    return oracle


def main(argv=None):
    from .runner import DEFAULT_CONFIG
    parser = argparse.ArgumentParser(description="Oracle metrics beside a trained model's.")
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--expid", required=True)
    parser.add_argument("--gpu", type=int, default=-1)
    args = parser.parse_args(argv)
    try:
        from fuxictr.pytorch.dataloaders import H5DataLoader

        from .config import load_expid
        from .runner import load_trained
        csv_params = load_expid(args.config, args.expid)
        oracle = oracle_metrics(csv_params)
        print(f"oracle  {fmt(oracle)}")
        params, feature_map, model = load_trained(args.config, args.expid, args.gpu)
        model.train_ctr = train_ctr(csv_params)
        test_gen = H5DataLoader(feature_map, stage="test", **params).make_iterator()
        result = model.evaluate(test_gen)
        print(f"model   {fmt(result)}")
        print("share of oracle  " + " - ".join(f"{k}: {v:.1%}" for k, v in share_of_oracle(result, oracle).items()))
    except UserError as exc:
        return report(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
