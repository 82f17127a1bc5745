"""Generate ``tiny_taobao`` and ``tiny_kuaivideo``: small CSVs in the exact TaobaoAd_x1 and
KuaiVideo_x1 schemas (column names and order of BARS's releases), with planted click signals.

- ``tiny_taobao``: ``clk``, three ``^``-joined behaviour sequences (``btag_his``,
  ``cate_his``, ``brand_his``, oldest first), 16 user/ad fields and a numeric ``price``.
  ``logit = -1 + 2.5 * share of the target's category in the history
  + [a cart/fav/buy (btag >= 3) of that category] - 1.2 * standardised log price
  * (1 + [pvalue_level == 1])``: it needs the sequences, the dense feature and a profile field.
- ``tiny_kuaivideo``: ``timestamp,user_id,item_id,is_click,is_like,is_follow,pos_items,
  neg_items`` plus ``item_visual_emb_dim16.h5`` (datasets ``key`` and ``value``, one row
  per item, as BARS's ``item_visual_emb_dim64.h5``). ``logit = -0.5 + 2 * <w, target's>
  + 6 * <mean visual
  vector of pos_items, target's> - 3 * <mean of neg_items, target's>``: the signal lives in
  the frozen visual vectors, and each item is seen a few times only.

Usage: ``python data/make_tiny_bars.py [--out data] [--seed 2024] [--users-scale 1.0]``.
The committed files were made with the defaults; the script is deterministic. Tests call
``taobao_rows`` / ``kuaivideo_rows`` to write a few rows of each schema.
"""
import argparse
import os

import h5py
import numpy as np
import pandas as pd

TAOBAO_COLUMNS = ["clk", "btag_his", "cate_his", "brand_his", "userid", "cms_segid", "cms_group_id",
                  "final_gender_code", "age_level", "pvalue_level", "shopping_level", "occupation",
                  "new_user_class_level", "adgroup_id", "cate_id", "campaign_id", "customer", "brand",
                  "price", "pid", "btag"]
KUAIVIDEO_COLUMNS = ["timestamp", "user_id", "item_id", "is_click", "is_like", "is_follow",
                     "pos_items", "neg_items"]
SPLITS = {"train": 0.7, "valid": 0.15, "test": 0.15}


def _join(matrix, lengths):
    """``^``-join the first ``lengths[r]`` ids of each row (one vectorised pass per column)."""
    out = np.full(len(matrix), "", dtype=object)
    for j in range(matrix.shape[1]):
        valid = j < lengths
        token = matrix[:, j].astype(str).astype(object)
        out = np.where(valid & (j > 0), out + "^" + token, np.where(valid, token, out))
    return out


def taobao_rows(num_users=300, rows_per_user=10, max_history=25, seed=2024):
    """A DataFrame in TaobaoAd_x1's column order, and each row's true click probability."""
    rng = np.random.default_rng(seed)
    n = num_users * rows_per_user
    num_cates, num_brands, num_ads = 20, 60, 400
    brand_cate = rng.integers(0, num_cates, num_brands)
    ad_brand = rng.integers(0, num_brands, num_ads)
    ad_cate = brand_cate[ad_brand]
    ad_price = np.round(np.exp(rng.normal(4.0, 1.0, num_ads)), 2)
    profile = {  # one value per user
        "cms_segid": rng.integers(0, 6, num_users), "cms_group_id": rng.integers(0, 13, num_users),
        "final_gender_code": rng.integers(1, 3, num_users), "age_level": rng.integers(0, 7, num_users),
        "pvalue_level": rng.integers(1, 4, num_users), "shopping_level": rng.integers(1, 4, num_users),
        "occupation": rng.integers(0, 2, num_users), "new_user_class_level": rng.integers(1, 5, num_users),
    }
    pref = rng.dirichlet(np.full(num_cates, 0.3), num_users)
    user = np.repeat(np.arange(num_users), rows_per_user)
    lengths = rng.integers(0, max_history + 1, n)
    # history categories from the user's preference, brands of those categories, behaviour tags
    cum = pref[user].cumsum(1)
    hist_cate = (rng.random((n, max_history, 1)) > cum[:, None, :]).sum(-1).clip(max=num_cates - 1)
    brands_by_cate = [np.flatnonzero(brand_cate == c) for c in range(num_cates)]
    pick = rng.random((n, max_history))
    hist_brand = np.zeros_like(hist_cate)
    for c in range(num_cates):  # a loop over categories, not rows
        where = hist_cate == c
        pool = brands_by_cate[c] if len(brands_by_cate[c]) else np.arange(num_brands)
        hist_brand[where] = pool[(pick[where] * len(pool)).astype(int)]
    hist_btag = rng.choice(4, size=(n, max_history), p=[0.7, 0.1, 0.1, 0.1]) + 1
    valid = np.arange(max_history) < lengths[:, None]
    # target ad: half from the preferred categories, half at random
    ads_by_cate = [np.flatnonzero(ad_cate == c) for c in range(num_cates)]
    target_cate = np.where(rng.random(n) < 0.5, (rng.random((n, 1)) > cum).sum(1).clip(max=num_cates - 1),
                           rng.integers(0, num_cates, n))
    ad = rng.integers(0, num_ads, n)
    for c in range(num_cates):
        where = target_cate == c
        if len(ads_by_cate[c]):
            ad[where] = ads_by_cate[c][rng.integers(0, len(ads_by_cate[c]), where.sum())]
    target_cate = ad_cate[ad]
    same = (hist_cate == target_cate[:, None]) & valid
    share = same.sum(1) / np.maximum(lengths, 1)
    strong = (same & (hist_btag >= 3)).any(1)
    log_price = np.log(ad_price[ad])
    price_z = (log_price - log_price.mean()) / log_price.std()
    logit = -1.0 + 2.5 * share + 1.0 * strong - 1.2 * price_z * (1 + (profile["pvalue_level"][user] == 1))
    prob = 1.0 / (1.0 + np.exp(-logit))
    df = pd.DataFrame({
        "clk": (rng.random(n) < prob).astype(int),
        "btag_his": _join(hist_btag, lengths), "cate_his": _join(hist_cate + 1, lengths),
        "brand_his": _join(hist_brand + 1, lengths), "userid": user + 1,
        **{k: v[user] for k, v in profile.items()},
        "adgroup_id": ad + 1, "cate_id": target_cate + 1, "campaign_id": ad // 4 + 1,
        "customer": ad_brand[ad] // 2 + 1, "brand": ad_brand[ad] + 1, "price": ad_price[ad],
        "pid": np.where(rng.random(n) < 0.7, "430548_1007", "430539_1007"), "btag": 1,
    })
    return df[TAOBAO_COLUMNS], prob


def kuaivideo_rows(num_users=200, num_items=600, rows_per_user=15, max_history=25, dim=16, seed=2024):
    """A DataFrame in KuaiVideo_x1's column order, the visual table ``[num_items, dim]`` and
    each row's true click probability. Item ids are 0..num_items-1, all keys of the table."""
    rng = np.random.default_rng(seed)
    visual = rng.normal(size=(num_items, dim))
    visual /= np.linalg.norm(visual, axis=1, keepdims=True)
    taste = rng.normal(size=(num_users, dim))
    taste /= np.linalg.norm(taste, axis=1, keepdims=True)
    affinity = taste @ visual.T  # [U, I]

    def draw(sign):  # per user, max_history items by softmax(sign * 4 * affinity), Gumbel trick
        gumbel = -np.log(-np.log(rng.random((num_users, num_items))))
        return np.argsort(-(sign * 4.0 * affinity + gumbel), axis=1)[:, :max_history]

    pos_seq, neg_seq = draw(1.0), draw(-1.0)
    n = num_users * rows_per_user
    user = np.repeat(np.arange(num_users), rows_per_user)
    step = np.tile(np.arange(rows_per_user), num_users)
    # histories grow with the user's rows, some start empty (as in BARS's prefix histories)
    pos_len = np.minimum(max_history, step * 2 + rng.integers(0, 3, n) - 1).clip(min=0)
    neg_len = np.minimum(max_history, step + rng.integers(0, 3, n) - 1).clip(min=0)
    item = rng.integers(0, num_items, n)
    pos_rows, neg_rows = pos_seq[user], neg_seq[user]

    def mean_visual(seq, length):
        mask = np.arange(max_history) < length[:, None]
        return (visual[seq] * mask[..., None]).sum(1) / np.maximum(length, 1)[:, None]

    v_item = visual[item]
    quality = visual @ rng.normal(size=dim)  # <v, w> with w ~ N(0, I): an item effect in the vectors
    logit = (-0.5 + 2.0 * quality[item] + 6.0 * (mean_visual(pos_rows, pos_len) * v_item).sum(1)
             - 3.0 * (mean_visual(neg_rows, neg_len) * v_item).sum(1))
    prob = 1.0 / (1.0 + np.exp(-logit))
    click = (rng.random(n) < prob).astype(int)
    timestamp = 1_000_000 + step * num_users + rng.permutation(num_users)[user]  # unique, by step
    df = pd.DataFrame({
        "timestamp": timestamp, "user_id": user, "item_id": item, "is_click": click,
        "is_like": click * (rng.random(n) < 0.1), "is_follow": click * (rng.random(n) < 0.02),
        "pos_items": _join(pos_rows, pos_len), "neg_items": _join(neg_rows, neg_len),
    })
    order = np.argsort(timestamp, kind="stable")  # BARS's files are sorted by timestamp
    return df.iloc[order].reset_index(drop=True)[KUAIVIDEO_COLUMNS], visual.astype("float32"), prob[order]


def write_visual_h5(path, table):
    """The pretrained table in BARS's layout: ``key`` (item ids) and ``value`` ``[N, dim]``."""
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as hf:
        hf.create_dataset("key", data=np.arange(len(table)))
        hf.create_dataset("value", data=table)
    os.replace(tmp, path)


def write_splits(df, prob, out, chronological, seed):
    os.makedirs(out, exist_ok=True)
    from sklearn.metrics import roc_auc_score
    if chronological:
        edges = np.cumsum([int(len(df) * f) for f in SPLITS.values()])
        split = np.select([np.arange(len(df)) < edges[0], np.arange(len(df)) < edges[1]],
                          ["train", "valid"], "test")
    else:
        split = np.random.default_rng(seed).choice(list(SPLITS), size=len(df), p=list(SPLITS.values()))
    label = "is_click" if "is_click" in df.columns else "clk"
    for name in SPLITS:
        part = df[split == name]
        path = os.path.join(out, name + ".csv")
        part.to_csv(path + ".tmp", index=False)
        os.replace(path + ".tmp", path)
        auc = roc_auc_score(part[label], prob[split == name])
        print(f"{path}: {len(part)} rows, CTR {part[label].mean():.3f}, oracle AUC {auc:.4f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                        help="folder that receives tiny_taobao/ and tiny_kuaivideo/")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    df, prob = taobao_rows(seed=args.seed)
    write_splits(df, prob, os.path.join(args.out, "tiny_taobao"), chronological=False, seed=args.seed)
    df, visual, prob = kuaivideo_rows(seed=args.seed)
    out = os.path.join(args.out, "tiny_kuaivideo")
    write_splits(df, prob, out, chronological=False, seed=args.seed)
    write_visual_h5(os.path.join(out, "item_visual_emb_dim16.h5"), visual)


if __name__ == "__main__":
    main()
