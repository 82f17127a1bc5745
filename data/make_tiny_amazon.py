"""Generate ``tiny_amazon``: a few thousand rows in the exact AmazonElectronics_x1 schema.

Columns: ``label,user_id,item_id,cate_id,item_history,cate_history``; histories are
``^``-joined, oldest first and newest last, as in BARS's AmazonElectronics_x1.

The click probability has a planted signal that depends on the history, so a model
that reads the sequence beats one that does not:

    logit = -1.5 + 3.0 * share of the target's category among the last 10 items
                 + 1.5 * [the newest item has the target's category]
                 + item quality

Usage: ``python data/make_tiny_amazon.py [--out data/tiny_amazon] [--seed 2024]``.
The committed CSVs were made with the defaults; the script is deterministic.
"""
import argparse
import os

import numpy as np
import pandas as pd

NUM_USERS = 400
NUM_ITEMS = 300
NUM_CATES = 8
MAX_HISTORY = 20
ROWS_PER_USER = 20
SPLITS = {"train": 0.7, "valid": 0.15, "test": 0.15}


def oracle_logit(target_cate, hist_cates, item_quality):
    """The planted click logit of one row (also used to report the oracle AUC)."""
    recent = hist_cates[-10:]
    share = np.mean(recent == target_cate) if len(recent) else 0.0
    newest = float(len(hist_cates) > 0 and hist_cates[-1] == target_cate)
    return -1.5 + 3.0 * share + 1.5 * newest + item_quality


def generate(seed=2024):
    rng = np.random.default_rng(seed)
    item_cate = rng.integers(0, NUM_CATES, size=NUM_ITEMS)
    item_quality = rng.normal(0.0, 0.5, size=NUM_ITEMS)
    items_by_cate = [np.flatnonzero(item_cate == c) for c in range(NUM_CATES)]
    rows = []
    for user in range(NUM_USERS):
        pref = rng.dirichlet(np.full(NUM_CATES, 0.3))
        for _ in range(ROWS_PER_USER):
            length = int(rng.integers(0, MAX_HISTORY + 1))
            cates = rng.choice(NUM_CATES, size=length, p=pref)
            hist = np.array([rng.choice(items_by_cate[c]) for c in cates], dtype=int)
            target_cate = rng.choice(NUM_CATES, p=pref) if rng.random() < 0.5 else rng.integers(NUM_CATES)
            item = int(rng.choice(items_by_cate[target_cate]))
            logit = oracle_logit(target_cate, cates, item_quality[item])
            label = int(rng.random() < 1.0 / (1.0 + np.exp(-logit)))
            rows.append({
                "label": label,
                "user_id": user + 1,
                "item_id": item + 1,
                "cate_id": int(target_cate) + 1,
                "item_history": "^".join(str(i + 1) for i in hist),
                "cate_history": "^".join(str(c + 1) for c in cates),
                "oracle_logit": logit,
            })
    df = pd.DataFrame(rows)
    split = rng.choice(list(SPLITS), size=len(df), p=list(SPLITS.values()))
    return {name: df[split == name].reset_index(drop=True) for name in SPLITS}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_amazon"))
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    from sklearn.metrics import roc_auc_score
    for name, df in generate(args.seed).items():
        path = os.path.join(args.out, name + ".csv")
        df.drop(columns="oracle_logit").to_csv(path + ".tmp", index=False)
        os.replace(path + ".tmp", path)
        auc = roc_auc_score(df.label, df.oracle_logit)
        print(f"{path}: {len(df)} rows, CTR {df.label.mean():.3f}, oracle AUC {auc:.4f}")


if __name__ == "__main__":
    main()
