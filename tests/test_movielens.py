"""data/make_movielens1m.py on a hand-written sample in GroupLens and RecBole form."""
import os
import sys

import pandas as pd
import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "data"))
import make_movielens1m as ml  # noqa: E402

MOVIES = [(1, "Toy Story (1995)", "Animation|Children's|Comedy"), (2, "Heat (1995)", "Action|Crime|Thriller"),
          (3, "Alien (1979)", "Horror|Sci-Fi"), (5, "Fargo (1996)", "Crime|Drama|Thriller")]
USERS = [(1, "F", 1, 10, "48067"), (2, "M", 56, 16, "70072-1234")]
# user 1: 10 events, two pairs of ties; user 2: 5 events (all train)
RATINGS = [(1, 3, 5, 100), (1, 1, 3, 100), (1, 2, 4, 90), (1, 5, 1, 120), (1, 1, 4, 130), (1, 3, 2, 140),
           (1, 2, 5, 150), (1, 5, 4, 150), (1, 1, 2, 160), (1, 3, 4, 170),
           (2, 5, 5, 10), (2, 1, 1, 20), (2, 2, 4, 30), (2, 3, 3, 40), (2, 5, 4, 50)]


def grouplens(folder):
    folder.mkdir()
    (folder / "ratings.dat").write_text("".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in RATINGS))
    (folder / "movies.dat").write_text("".join(f"{m}::{t}::{g}\n" for m, t, g in MOVIES), encoding="latin-1")
    (folder / "users.dat").write_text("".join(f"{u}::{g}::{a}::{o}::{z}\n" for u, g, a, o, z in USERS))
    return folder


def recbole(folder):
    folder.mkdir()
    title = {m: t for m, t, _ in MOVIES}
    rows = lambda header, lines: "\r\n".join(["\t".join(header)] + ["\t".join(map(str, l)) for l in lines]) + "\r\n"
    (folder / "ml-1m.inter").write_text(rows(["user_id:token", "item_id:token", "rating:float", "timestamp:float"],
                                             [(f"1m_{u}", title[m], r, t) for u, m, r, t in RATINGS]))
    (folder / "ml-1m.item").write_text(rows(["item_id:token", "movie_title:token", "release_year:float", "genre:token"],
                                            [(t, t[:-7], t[-5:-1], g.replace("|", " ")) for _, t, g in MOVIES]))
    (folder / "ml-1m.user").write_text(rows(["user_id:token", "age:float", "gender:token", "occupation:float",
                                             "zip_code:token"], [(f"1m_{u}", a, g, o, z) for u, g, a, o, z in USERS]))
    return folder


def read(out):
    return {s: pd.read_csv(out / f"{s}.csv", dtype=str, keep_default_na=False) for s in ("train", "valid", "test")}


def test_both_sources_give_the_same_chronological_leak_free_csv(tmp_path, capsys):
    outs = []
    for make in (grouplens, recbole):
        out = tmp_path / f"out_{make.__name__}"
        assert ml.main(["--source", str(make(tmp_path / make.__name__)), "--out", str(out), "--max-len", "3"]) == 0
        outs.append(read(out))
    assert "rows: {'train': 13, 'valid': 1, 'test': 1}" in capsys.readouterr().out
    for split in outs[0]:
        pd.testing.assert_frame_equal(outs[0][split], outs[1][split])
    parts = outs[0]
    assert list(parts["train"].columns) == ml.COLUMNS
    # item ids are positions in the movie file: MovieID 5 -> 4; genre = first genre's index
    user1 = pd.concat([parts[s][parts[s].user_id == "1"] for s in ("train", "valid", "test")])
    # order: (timestamp, item id); ties at t=100 and t=150 put the smaller item first
    assert user1.item_id.tolist() == ["2", "1", "3", "4", "1", "3", "2", "4", "1", "3"]
    assert user1.label.tolist() == ["1", "0", "1", "0", "1", "0", "1", "1", "0", "1"]
    # each history = the (at most 3) newest earlier events, oldest first: nothing from the future
    events = user1.item_id.tolist()
    for i, hist in enumerate(user1.item_history):
        assert hist == "^".join(events[max(0, i - 3):i])
    genre = {"1": "3", "2": "1", "3": "11", "4": "6"}
    assert user1.genre.tolist() == [genre[i] for i in events]
    assert user1.genre_history.iloc[4] == "^".join(genre[i] for i in events[1:4])
    # split: 10 events -> 8 train, 1 valid, 1 test (the newest); 5 events -> all train
    assert parts["test"].item_id.tolist() == ["3"] and parts["valid"].item_id.tolist() == ["1"]
    assert (parts["train"].user_id == "2").sum() == 5
    row = parts["train"][parts["train"].user_id == "2"].iloc[0]
    assert (row.gender, row.age, row.occupation, row.zip, row.year) == ("M", "56", "16", "700", "1996")


def test_max_users_is_seeded_and_output_is_replaced_atomically(tmp_path):
    src = grouplens(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.csv").write_text("x")
    assert ml.main(["--source", str(src), "--out", str(out), "--max-users", "1", "--seed", "3"]) == 0
    first = read(out)
    assert not (out / "stale.csv").exists()
    assert len(set(pd.concat(first.values()).user_id)) == 1
    assert ml.main(["--source", str(src), "--out", str(out), "--max-users", "1", "--seed", "3"]) == 0
    pd.testing.assert_frame_equal(read(out)["train"], first["train"])
    assert [p for p in os.listdir(tmp_path) if p.startswith(".out")] == []


def test_a_source_without_movielens_files_is_one_error_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert ml.main(["--source", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "neither ratings.dat" in err and not (tmp_path / "out").exists()


def test_train_per_user_keeps_the_newest_training_rows_with_their_full_histories(tmp_path, capsys):
    src = grouplens(tmp_path / "src")
    full, capped = tmp_path / "full", tmp_path / "capped"
    assert ml.main(["--source", str(src), "--out", str(full), "--max-len", "20"]) == 0
    assert ml.main(["--source", str(src), "--out", str(capped), "--max-len", "20", "--train-per-user", "3"]) == 0
    assert "training rows dropped (older than each user's newest 3): 7" in capsys.readouterr().out
    a, b = read(full), read(capped)
    for split in ("valid", "test"):  # the evaluation rows do not change
        pd.testing.assert_frame_equal(a[split], b[split])
    # each user's 3 newest training rows, unchanged: user 1 had 8, user 2 had 5
    expected = pd.concat([a["train"][a["train"].user_id == u].tail(3) for u in ("1", "2")]).reset_index(drop=True)
    pd.testing.assert_frame_equal(b["train"], expected)
    assert b["train"].item_history.str.count(r"\^").max() == 6  # 7 earlier events, dropped rows included


def test_train_per_user_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        ml.main(["--source", str(grouplens(tmp_path / "src")), "--out", str(tmp_path / "out"), "--train-per-user", "0"])
    assert exc.value.code == 2 and "--train-per-user must be a positive number of rows, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
