"""The CSV validator that runs before the H5 build: each error kind, skip mode, truncation, md5."""
import hashlib
import logging
import os

import pytest

from interformer_fuxi.errors import UserError
from interformer_fuxi.validate import validate_dataset

HEADER = "label,user_id,item_id,cate_id,item_history,cate_history,price"
GOOD = ["1,1,10,2,3^4^5,1^2^2,9.5", "0,2,11,3,,,1e3", "1,3,12,1,7^8^9^10^11,1^1^2^2^3,0.25"]


def params(tmp_path, lines, **extra):
    path = tmp_path / "train.csv"
    path.write_text("\n".join([HEADER] + lines) + "\n")
    p = {"dataset_id": "toy", "train_data": str(path), "group_id": "user_id",
         "label_col": {"name": "label", "dtype": "float"},
         "feature_cols": [
             {"name": "user_id", "dtype": "int", "type": "meta"},
             {"name": ["item_id", "cate_id"], "dtype": "str", "type": "categorical"},
             {"name": "price", "dtype": "float", "type": "numeric"},
             {"name": "item_history", "dtype": "str", "type": "sequence", "splitter": "^", "max_len": 4},
             {"name": "cate_history", "dtype": "str", "type": "sequence", "splitter": "^", "max_len": 4}]}
    p.update(extra)
    return p


def error_of(p, tmp_path):
    with pytest.raises(UserError) as info:
        validate_dataset(p, str(tmp_path))
    return str(info.value)


def test_good_rows_pass_and_long_histories_are_reported_as_truncation(tmp_path, caplog):
    p = params(tmp_path, GOOD)
    with caplog.at_level(logging.INFO):
        paths = validate_dataset(p, str(tmp_path))
    assert paths == {"train_data": p["train_data"]}  # nothing cleaned, the file itself
    assert "3 rows" in caplog.text
    assert "1 rows have item_history longer than max_len (longest 5)" in caplog.text
    assert "1 rows have cate_history longer than max_len (longest 5)" in caplog.text


@pytest.mark.parametrize("bad_line, fragment", [
    ("1,4,13,2,3^4,1^2", "line 3: expected 7 fields, saw 6"),
    ("1,4,13,2,3^4,1^2,1,extra", "line 3: expected 7 fields, saw 8"),
    ("2,4,13,2,3^4,1^2,1.0", "line 3: label '2' of label is not 0 or 1"),
    ("yes,4,13,2,3^4,1^2,1.0", "line 3: label 'yes' of label is not 0 or 1"),
    ("1,u4,13,2,3^4,1^2,1.0", "line 3: user_id = 'u4' is not an integer"),
    ("1,4,13,2,3^4,1^2,cheap", "line 3: price = 'cheap' is not a finite number"),
    ("1,4,13,2,3^4,1^2,", "line 3: price is empty (set fill_na to allow it)"),
    ("1,4,13,2,3|4,1^2,1.0", "line 3: item_history = '3|4' is not joined by '^'"),
    ("1,4,13,2,3^^4,1^2,1.0", "line 3: item_history = '3^^4' has an empty element"),
])
def test_each_bad_row_kind_is_reported_with_its_line_number(tmp_path, bad_line, fragment):
    message = error_of(params(tmp_path, GOOD[:1] + [bad_line] + GOOD[1:]), tmp_path)
    assert fragment in message, message
    assert message.startswith(str(tmp_path / "train.csv")) and "1 bad row(s) of 4" in message
    assert "bad_rows: skip" in message and "\n" not in message


def test_header_order_and_missing_columns(tmp_path):
    p = params(tmp_path, GOOD, csv_header=["label", "user_id", "cate_id", "item_id", "item_history",
                                           "cate_history", "price"])
    assert "header column 3 is 'item_id', expected 'cate_id'" in error_of(p, tmp_path)
    p = params(tmp_path, GOOD)
    p["feature_cols"].append({"name": "brand", "dtype": "str", "type": "categorical"})
    assert "column 'brand' configured in toy is missing" in error_of(p, tmp_path)


def test_skip_mode_builds_from_a_cleaned_copy_and_counts(tmp_path, caplog):
    bad = ["1,4,13,2,3^4,1^2", "7,5,13,2,3^4,1^2,1.0", "1,6,13,2,3^4,1^2,x"]
    p = params(tmp_path, GOOD + bad, bad_rows="skip")
    original = open(p["train_data"]).read()
    work = tmp_path / "work"
    work.mkdir()
    with caplog.at_level(logging.WARNING):
        paths = validate_dataset(p, str(work))
    cleaned = open(paths["train_data"]).read().splitlines()
    assert paths["train_data"].startswith(str(work))
    assert cleaned == [HEADER] + GOOD
    assert open(p["train_data"]).read() == original
    assert "3 bad row(s) of 6 (field count: 1, label: 1, numeric: 1)" in caplog.text
    assert "line 5: expected 7 fields, saw 6" in caplog.text and "line 7: price = 'x'" in caplog.text


def test_bad_rows_mode_and_md5(tmp_path):
    assert "bad_rows must be one of fail, skip" in error_of(params(tmp_path, GOOD, bad_rows="drop"), tmp_path)
    p = params(tmp_path, GOOD)
    digest = hashlib.md5(open(p["train_data"], "rb").read()).hexdigest()
    p["md5"] = {"train.csv": "0" * 32}
    message = error_of(p, tmp_path)
    assert f"md5 {digest} differs from {'0' * 32}" in message and "remove its md5 entry" in message
    p["md5"] = {"train.csv": digest}
    validate_dataset(p, str(tmp_path))


def test_group_id_must_be_a_configured_column(tmp_path):
    p = params(tmp_path, GOOD, group_id="userid")
    assert "group_id 'userid' is not a configured feature column" in error_of(p, tmp_path)
