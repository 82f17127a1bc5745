"""Generate ``synthetic_x1``: AmazonElectronics_x1-shaped data with a known click probability.

Columns: ``label,user_id,item_id,cate_id,item_history,cate_history,user_group`` (the
AmazonElectronics_x1 schema plus a static profile field), and with ``--dense K`` the numeric
``user_dense_1..K``. Histories are ``^``-joined, oldest first, at most ``--history`` items.

Statistics like Amazon's: each user has ``>= 5`` events and a long-tailed (Pareto) number
of them; items have Zipf popularity; an item's category is a function of the item.

Each event is one row: a candidate item shown after the user's earlier events (half drawn
from the user's category taste, half by popularity); its click is Bernoulli(p) with

    logit = b + q[item] + 3 * <sum_t a_t e[h_t], e[item]> + 2 * s[g] * recent
    a_t   = softmax over the valid history of M[g, cate(h_t)]

- ``g`` is the user's profile (``user_group``): it decides WHICH history items matter
  (``M[g, c]``, a per-group relevance of each category): profile -> sequence;
- ``recent`` is the share of the target's category among the 3 newest history items, and
  ``s[g] = +-1`` (repeat- or variety-seeking groups): the recent history shifts the item's
  relevance: sequence -> item, modulated by the profile;
- ``e`` are item vectors (category centre + noise), ``q`` item quality, ``b`` a bias.
With ``--dense K`` the dense features are noisy views of the group's ``s[g]`` and of the
user's activity level.

The true probability of every valid/test row goes to ``valid_oracle.csv`` /
``test_oracle.csv`` (column ``p_true``, same row order), never into the features; the
runner logs the oracle metrics beside the model's and ``python -m interformer_fuxi.oracle
--expid InterFormer_synthetic`` prints both. Split per user, chronologically: the last
``max(1, floor(0.1 n))`` rows to test, as many before them to valid, the rest to train.
Everything is vectorised (numpy over rows, loops only over history positions and blocks).

Usage: ``python data/make_synthetic.py [--out data/synthetic_x1] [--users 4000] [--items 3000]
[--cates 40] [--history 30] [--rows 80000] [--groups 8] [--dense 0] [--seed 2024]``.
"""
import argparse
import os
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from interformer_fuxi.atomic import atomic_dir  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DIM = 8          # item vector size
RECENT = 3       # newest history items behind `recent`
BLOCK = 100_000  # rows per vectorised block (bounds memory at large scales)


def make_world(rng, users, items, cates, groups):
    """The latent parameters: item categories, vectors, quality; group relevance and sign."""
    cate_size = rng.zipf(1.5, cates).clip(max=items) + 1.0
    item_cate = rng.choice(cates, size=items, p=cate_size / cate_size.sum())
    centre = rng.normal(size=(cates, DIM))
    vec = (centre[item_cate] + 0.5 * rng.normal(size=(items, DIM))) / np.sqrt(DIM)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    popularity = popularity[rng.permutation(items)]
    return {
        "item_cate": item_cate, "vec": vec.astype(np.float32), "quality": rng.normal(0, 0.5, items),
        "popularity": popularity / popularity.sum(),
        "relevance": 2.0 * rng.normal(size=(groups, cates)),  # M[g, c]
        "sign": np.where(np.arange(groups) % 2 == 0, 1.0, -1.0),  # s[g]
        "group": rng.integers(0, groups, users),
    }


def event_counts(rng, users, rows):
    """Long-tailed events per user, at least 5, about ``rows`` in total."""
    tail = rng.pareto(1.5, users)
    extra = max(rows / users - 5.0, 0.0)
    return 5 + np.floor(tail / tail.mean() * extra).astype(np.int64).clip(max=int(50 * (extra + 5)))


def draw_events(rng, world, counts):
    """Flat event items (users consecutive): half by the user's category taste, half by popularity."""
    items = len(world["item_cate"])
    user = np.repeat(np.arange(len(counts)), counts)
    n = len(user)
    taste = world["relevance"][world["group"]] + rng.normal(size=world["relevance"][world["group"]].shape)
    taste = np.exp(taste - taste.max(1, keepdims=True))
    taste = (taste / taste.sum(1, keepdims=True)).cumsum(1)
    cate = (rng.random((n, 1)) > taste[user]).sum(1).clip(max=taste.shape[1] - 1)
    # an item of that category by popularity: inverse CDF inside each category's block
    order = np.lexsort((np.arange(items), world["item_cate"]))
    cum = np.cumsum(world["popularity"][order])
    block_start = np.searchsorted(world["item_cate"][order], np.arange(taste.shape[1]))
    block_end = np.searchsorted(world["item_cate"][order], np.arange(taste.shape[1]), side="right")
    lo = np.where(block_start > 0, cum[block_start - 1], 0.0)
    hi = cum[block_end - 1]
    empty = block_end == block_start
    u = lo[cate] + rng.random(n) * (hi[cate] - lo[cate])
    by_taste = order[np.searchsorted(cum, u).clip(block_start[cate], np.maximum(block_end[cate] - 1, 0))]
    by_pop = rng.choice(items, size=n, p=world["popularity"])
    use_taste = (rng.random(n) < 0.5) & ~empty[cate]
    return user, np.where(use_taste, by_taste, by_pop)


def probabilities(world, user, item, history, valid):
    """True click probability of rows with history ``[R, H]`` (oldest first, right-aligned)."""
    g = world["group"][user]
    hist_cate = world["item_cate"][history]
    score = np.where(valid, world["relevance"][g[:, None], hist_cate], -np.inf)
    score = score - score.max(1, keepdims=True).clip(min=-1e9)
    att = np.where(valid, np.exp(score), 0.0)
    att = att / np.maximum(att.sum(1, keepdims=True), 1e-12)
    interest = np.einsum("rh,rhd->rd", att, world["vec"][history])
    rel = (interest * world["vec"][item]).sum(1)
    target_cate = world["item_cate"][item]
    newest = valid[:, -RECENT:]
    recent = ((hist_cate[:, -RECENT:] == target_cate[:, None]) & newest).sum(1) / np.maximum(newest.sum(1), 1)
    logit = -0.8 + world["quality"][item] + 3.0 * rel + 2.0 * world["sign"][g] * recent
    return 1.0 / (1.0 + np.exp(-logit))


def _join(matrix, valid):
    """``^``-join the valid ids of each row (right-aligned), one vectorised pass per column."""
    out = np.full(len(matrix), "", dtype=object)
    for j in range(matrix.shape[1]):
        token = matrix[:, j].astype(str).astype(object)
        out = np.where(valid[:, j], np.where(out == "", token, out + "^" + token), out)
    return out


def generate(users=4000, items=3000, cates=40, history=30, rows=80000, groups=8, dense=0, seed=2024):
    """``{split: DataFrame}`` in the output column order, with ``p_true`` as the last column."""
    rng = np.random.default_rng(seed)
    world = make_world(rng, users, items, cates, groups)
    counts = event_counts(rng, users, rows)
    user, event_item = draw_events(rng, world, counts)
    n = len(user)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    pos = np.arange(n) - first
    keep = np.flatnonzero(pos >= 1)  # a row needs at least one earlier event
    blocks = []
    for start in range(0, len(keep), BLOCK):
        idx = keep[start:start + BLOCK]
        offsets = idx[:, None] - history + np.arange(history)  # the `history` events before, oldest first
        valid = offsets >= first[idx, None]
        hist = event_item[np.maximum(offsets, 0)]
        p = probabilities(world, user[idx], event_item[idx], hist, valid)
        label = (rng.random(len(idx)) < p).astype(np.int64)
        block = {"label": label, "user_id": user[idx] + 1, "item_id": event_item[idx] + 1,
                 "cate_id": world["item_cate"][event_item[idx]] + 1,
                 "item_history": _join(hist + 1, valid), "cate_history": _join(world["item_cate"][hist] + 1, valid),
                 "user_group": world["group"][user[idx]] + 1}
        for k in range(dense):
            if k % 2 == 0:  # a noisy view of the group's sign s[g]
                value = world["sign"][world["group"][user[idx]]] + rng.normal(0, 0.5, len(idx))
            else:  # the user's activity level (log events)
                value = np.log(counts[user[idx]]) + rng.normal(0, 0.1, len(idx))
            block[f"user_dense_{k + 1}"] = np.round(value, 4)
        block["p_true"] = p
        blocks.append(pd.DataFrame(block))
    df = pd.concat(blocks, ignore_index=True)
    # chronological split per user over that user's rows
    rows_per_user = counts - 1
    size = np.repeat(rows_per_user, rows_per_user)
    rank = np.arange(len(df)) - np.repeat(np.cumsum(rows_per_user) - rows_per_user, rows_per_user)
    n_out = np.maximum(1, np.floor(0.1 * size)).astype(int)
    split = np.where(rank >= size - n_out, "test", np.where(rank >= size - 2 * n_out, "valid", "train"))
    return {name: df[split == name].reset_index(drop=True) for name in ("train", "valid", "test")}


def write(parts, out):
    """Write the CSVs (and the oracle side files) into a temporary folder, then rename it."""
    with atomic_dir(out) as tmp:
        for name, df in parts.items():
            df.drop(columns="p_true").to_csv(os.path.join(tmp, name + ".csv"), index=False)
            if name != "train":
                df[["p_true"]].to_csv(os.path.join(tmp, name + "_oracle.csv"), index=False, float_format="%.6f")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "synthetic_x1"))
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--cates", type=int, default=40)
    parser.add_argument("--history", type=int, default=30, help="history items per row (= max_len)")
    parser.add_argument("--rows", type=int, default=80000, help="about this many events in total")
    parser.add_argument("--groups", type=int, default=8, help="profile groups (user_group)")
    parser.add_argument("--dense", type=int, default=0, help="numeric profile columns user_dense_1..K")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    parts = generate(args.users, args.items, args.cates, args.history, args.rows, args.groups, args.dense, args.seed)
    write(parts, args.out)
    from sklearn.metrics import log_loss, roc_auc_score
    for name, df in parts.items():
        print(f"{args.out}/{name}.csv: {len(df)} rows, CTR {df.label.mean():.3f}, "
              f"oracle AUC {roc_auc_score(df.label, df.p_true):.4f}, logloss {log_loss(df.label, df.p_true):.4f}")


if __name__ == "__main__":
    main()
