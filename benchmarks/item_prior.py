"""How far counting goes: test metrics of scorers that read only the non-sequence fields.

    python benchmarks/item_prior.py --dataset movielens1m_x1_t30

Each scorer is fitted on the training split and scores the test split. ``item`` is an item's
mean training label, shrunk towards the global mean by ``k``
pseudo-rows (``(clicks + k·p) / (rows + k)``; an item without training rows gets ``p``);
``user`` the same per user; ``user + item`` adds the two in logit space. gAUC ranks within a
user, so a user's own mean cannot move it: what it measures is how well a model orders one
user's candidates, and ``item`` is the floor a model should clear there. ``logistic regression``
is one learned scalar per value of every non-sequence field (FuxiCTR's ``LogisticRegression``),
trained as the evidence protocol trains the models (Adam, batch 2048, 3 epochs, seed 2024) at
each ``--lr``: how far a budget of that many optimizer steps lets per-value weights move.
Prints a Markdown table.
"""
import argparse
import os
import sys

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from interformer_fuxi.errors import UserError, report  # noqa: E402
from interformer_fuxi.metrics import group_auc, logloss  # noqa: E402


def shrunk_mean(train, key, k, prior):
    stats = train.groupby(key)["label"].agg(["sum", "count"])
    return (stats["sum"] + k * prior) / (stats["count"] + k)


def logit(p):
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def scorers(train, test, ks):
    """``{name: test probabilities [N]}``."""
    prior = train["label"].mean()
    user = test["user_id"].map(shrunk_mean(train, "user_id", 5, prior)).fillna(prior).to_numpy()
    out = {"user (k = 5)": user}
    for k in ks:
        item = test["item_id"].map(shrunk_mean(train, "item_id", k, prior)).fillna(prior).to_numpy()
        out[f"item (k = {k})"] = item
    item5 = test["item_id"].map(shrunk_mean(train, "item_id", 5, prior)).fillna(prior).to_numpy()
    out["user + item (k = 5, logits added)"] = 1 / (1 + np.exp(-(logit(user) + logit(item5) - logit(prior))))
    return out


def logistic_regression(train, test, fields, lr, epochs=3, batch_size=2048, seed=2024):
    """Test probabilities ``[N]`` of a per-value logistic regression on ``fields`` (Adam, zero init);
    a value unseen in training scores 0."""
    import torch

    torch.manual_seed(seed)
    codes = {f: {v: i + 1 for i, v in enumerate(train[f].unique())} for f in fields}
    offsets = np.cumsum([0] + [len(codes[f]) + 1 for f in fields])

    def ids(frame):
        cols = [frame[f].map(codes[f]).fillna(0).astype(np.int64).to_numpy() + offsets[i] for i, f in enumerate(fields)]
        return torch.from_numpy(np.stack(cols, axis=1))

    x, y = ids(train), torch.tensor(train["label"].to_numpy(np.float32))
    weights = torch.nn.Embedding(int(offsets[-1]), 1)
    torch.nn.init.zeros_(weights.weight)
    bias = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([weights.weight, bias], lr=lr)
    for _ in range(epochs):
        for rows in torch.randperm(len(y)).split(batch_size):
            logit = weights(x[rows]).sum(dim=(1, 2)) + bias
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return torch.sigmoid(weights(ids(test)).sum(dim=(1, 2)) + bias).numpy().astype(np.float64)


def read_split(root, dataset, split):
    """The label and every non-sequence column (as strings) of ``<root>/<dataset>/<split>.csv``."""
    path = os.path.join(root, dataset, f"{split}.csv")
    if not os.path.exists(path):
        raise UserError(f"{path}: not found (build the dataset first, see docs/results.md)")
    header = list(pd.read_csv(path, nrows=0).columns)
    missing = [c for c in ("label", "user_id", "item_id") if c not in header]
    if missing:
        raise UserError(f"{path}: expected the columns label, user_id, item_id; missing {', '.join(missing)}")
    cols = [c for c in header if not c.endswith("_history")]
    frame = pd.read_csv(path, usecols=cols, dtype=str, keep_default_na=False)
    frame["label"] = frame["label"].astype(float)
    return frame


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="a folder under data/ with train.csv and test.csv")
    parser.add_argument("--data-root", default=os.path.join(REPO, "data"))
    parser.add_argument("--k", type=float, nargs="+", default=[0, 5, 20], help="pseudo-rows of shrinkage")
    parser.add_argument("--lr", type=float, nargs="*", default=[1e-3, 1e-2], help="the logistic regression's rates")
    args = parser.parse_args(argv)
    try:
        train, test = (read_split(args.data_root, args.dataset, split) for split in ("train", "test"))
    except UserError as exc:
        return report(exc)
    y, users = test["label"].to_numpy(float), test["user_id"].to_numpy()
    print(f"{args.dataset}: {len(train):,} training rows, {len(test):,} test rows, "
          f"{test['user_id'].nunique():,} test users\n")
    prior = train["label"].mean()
    spread = logit(shrunk_mean(train, "item_id", 5, prior).to_numpy()) - logit(prior)
    print("items' training log-odds (5 pseudo-rows) against the mean: 5th / 50th / 95th percentile "
          + " / ".join(f"{v:+.2f}" for v in np.percentile(spread, [5, 50, 95])) + "\n")
    print("| scorer | test gAUC | test AUC | test logloss |\n|---|---:|---:|---:|")
    found = scorers(train, test, args.k)
    fields = [c for c in train.columns if c != "label"]
    for lr in args.lr:
        found[f"logistic regression on {', '.join(fields)} (lr {lr:g})"] = logistic_regression(train, test, fields, lr)
    for name, p in found.items():
        print(f"| {name} | {group_auc(y, p, users):.4f} | {roc_auc_score(y, p):.4f} | {logloss(y, p):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
