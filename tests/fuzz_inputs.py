"""Generated bad (and good) inputs for the CSV validator and the config reader, and the check
every case must pass: it is accepted, or refused with one ``UserError`` line; never another
exception. Used by ``tests/test_fuzz.py`` (a few hundred cases) and ``benchmarks/chaos.py
--fuzz`` (ten thousand)."""
import csv
import io
import os

import yaml
from hypothesis import strategies as st

from interformer_fuxi.errors import UserError

AMAZON_HEADER = ["label", "user_id", "item_id", "cate_id", "item_history", "cate_history"]
AMAZON = {"dataset_id": "fuzz", "group_id": "user_id", "label_col": {"name": "label", "dtype": "float"},
          "feature_cols": [
              {"name": "user_id", "active": True, "dtype": "int", "type": "meta"},
              {"name": ["item_id", "cate_id"], "active": True, "dtype": "str", "type": "categorical"},
              {"name": "price", "active": True, "dtype": "float", "type": "numeric"},
              {"name": "item_history", "active": True, "dtype": "str", "type": "sequence", "splitter": "^",
               "max_len": 20, "share_embedding": "item_id", "feature_encoder": None},
              {"name": "cate_history", "active": True, "dtype": "str", "type": "sequence", "splitter": "^",
               "max_len": 20, "share_embedding": "cate_id", "feature_encoder": None}]}
HEADER = AMAZON_HEADER + ["price"]

ids = st.integers(0, 10 ** 6).map(str)
nasty = st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "1e309", "null", "None", '"', '""', ",", "\t", "^",
                         "^^", "1^", "^1", "1|2", "1;2", "1,2", "\n", "\r\n", "é", "\x00", "💥", "0x1f", "1.5", "-0",
                         "00", "+1", " 1 "])
text = st.text(max_size=12)
sequence = st.one_of(st.lists(ids, max_size=30).map("^".join), st.lists(ids, min_size=200, max_size=400).map("^".join),
                     st.lists(ids, max_size=5).map("|".join), nasty, text)
FIELD = {"label": st.one_of(st.sampled_from(["0", "1"]), nasty, text),
         "user_id": st.one_of(ids, nasty, text), "item_id": st.one_of(ids, nasty, text),
         "cate_id": st.one_of(ids, nasty), "item_history": sequence, "cate_history": sequence,
         "price": st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), ids, nasty)}


@st.composite
def csv_bytes(draw):
    """A CSV file's bytes: a header (right, shuffled, short, duplicated, extra), rows of valid
    and invalid fields, quoted or raw, in UTF-8 or another encoding; or random bytes."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=300))
    header = list(HEADER)
    change = draw(st.integers(0, 5))
    if change == 1:
        header = draw(st.permutations(header))
    elif change == 2:
        header.remove(draw(st.sampled_from(header)))
    elif change == 3:
        header.append(draw(st.sampled_from(header)))
    elif change == 4:
        header.append(draw(text))
    rows = draw(st.lists(st.tuples(*[FIELD.get(c, text) for c in header]), max_size=12))
    out = io.StringIO()
    if draw(st.booleans()):
        writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
        writer.writerow(header)
        writer.writerows(rows)
    else:  # joined by hand: separators, quotes and newlines inside fields stay unescaped
        out.write("\n".join(",".join(r) for r in [header] + list(rows)) + draw(st.sampled_from(["", "\n"])))
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["latin-1", "utf-16", "utf-8-sig"]))
    return out.getvalue().encode(encoding, errors="replace")


def check_csv(data, folder, mode="fail"):
    """Validate ``data`` as a training CSV; ``"ok"``, or ``"refused"`` with one line naming the
    file. Any other exception is the crash the fuzzing looks for."""
    from interformer_fuxi.validate import column_checks, validate_file

    path = os.path.join(folder, "train.csv")
    with open(path, "wb") as f:
        f.write(data)
    params = dict(AMAZON, train_data=path)
    try:
        report = validate_file(path, params, column_checks(params), mode, os.path.join(folder, "clean.csv"))
    except UserError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(path), message
        return "refused"
    assert report.rows >= 1
    return "ok"


keys = st.sampled_from(["model", "dataset_id", "epochs", "batch_size", "embedding_dim", "learning_rate", "monitor",
                        "feature_cols", "data_root", "train_data", "num_layers", "loss", "optimizer", "metrics",
                        "Base", "label_col"]) | st.text(max_size=8)
values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                      max_leaves=12)
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))


@st.composite
def config_text(draw):
    """A model_config.yaml's text: generated sections, broken YAML, bombs, deep nesting."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.text(max_size=200))
    if kind == 1:
        return BOMB + "Fuzz: {model: InterFormer, dataset_id: tiny_amazon, extra: *i}\n"
    if kind == 2:
        depth = draw(st.integers(50, 5000))
        return "Fuzz: " + "[" * depth + "]" * depth + "\n"
    if kind == 3:
        return "Fuzz: {model: InterFormer, dataset_id: tiny_amazon}\nFuzz: {epochs: 1}\n"  # duplicate key
    section = draw(st.dictionaries(keys, values, max_size=8))
    if draw(st.booleans()):
        section = dict({"model": "InterFormer", "dataset_id": "tiny_amazon"}, **section)
    return yaml.safe_dump({"Fuzz": section, **draw(st.dictionaries(keys, values, max_size=2))})


def check_config(text, folder):
    """Load expid ``Fuzz`` from a config folder whose model_config.yaml is ``text`` (the project's
    dataset_config beside it) and check its keys; ``"ok"`` or ``"refused"`` (one line)."""
    import shutil

    from interformer_fuxi.config import load_expid
    from interformer_fuxi.config_keys import check_keys
    from interformer_fuxi.registry import get_model

    config = os.path.join(folder, "config")
    os.makedirs(config, exist_ok=True)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shutil.copy(os.path.join(repo, "config", "dataset_config.yaml"), config)
    with open(os.path.join(config, "model_config.yaml"), "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(text)
    try:
        params = load_expid(config, "Fuzz")
        check_keys(params, get_model(params.get("model")))
    except UserError as exc:
        assert "\n" not in str(exc), str(exc)
        return "refused"
    return "ok"
