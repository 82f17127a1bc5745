"""CSV -> H5 in chunks, with the output of FuxiCTR 2.0.4's ``FeatureProcessor`` + ``build_dataset``.

FuxiCTR reads a whole CSV into pandas and encodes sequences token by token in Python; this
builder takes ``chunk_rows`` rows at a time, read, preprocessed and tokenized by
:mod:`interformer_fuxi.csv_chunks` (the same dtypes and NA parsing as FuxiCTR's reader; with
``build_workers > 1`` by a pool of processes, in file order), in two passes:

1. over the train file: value and token counts per column, the observed sequence length,
   numeric normalizer statistics (``partial_fit``), the ids of ``meta`` columns;
   then the vocabularies in FuxiCTR's id order (kept tokens sorted, ``1..n``; ``0`` the
   padding, ``n + 1`` the out-of-vocabulary id), ``share_embedding`` merges,
   ``pretrained_emb`` tables (their keys extend the vocabulary, as FuxiCTR does);
2. over each split: every chunk encoded with array operations (each distinct token looked
   up once, one gather into the padded matrix) and appended to the split's H5 file, or to FuxiCTR's
   ``<split>/part_<k>.h5`` blocks. A test file equal to the valid file (BARS) is copied.

It writes the same ``feature_map.json``, ``feature_vocab.json``, ``pretrained_emb.h5``,
H5 arrays (dtypes included) and a pickled FuxiCTR ``FeatureProcessor`` with equivalent
tokenizers. Peak memory is that of one chunk plus the vocabularies. One numeric
difference: ``normalizer: StandardScaler`` is fitted incrementally, equal to FuxiCTR's fit
to about 1e-12 (``MinMaxScaler``: exactly). FuxiCTR 2.0.4's own ``normalizer`` cannot
transform (:mod:`interformer_fuxi.fuxictr_processor`); both builders here use the fixed one.

Not supported (a one-line ``UserError``; ``build: fuxictr`` builds them as FuxiCTR does):
``valid_size``/``test_size`` splitting of the train file, ``category_processor`` (FuxiCTR
2.0.4 fits its buckets but cannot transform them), ``preprocess`` other than
``copy_from(column)``, sequences without a ``splitter``. Known difference: with
``data_block_size > 0`` a ``meta`` column with ``remap`` gets one id per value over the whole
split; FuxiCTR remaps it per block in worker processes (block-local ids).
"""
import glob
import itertools
import json
import logging
import os
import shutil
import time
from json.encoder import encode_basestring_ascii

import h5py
import numpy as np
import pandas as pd
from fuxictr.preprocess.utils import Tokenizer
from pandas._libs import hashtable  # an incremental hash table (pandas < 2.3 is pinned)
from sklearn import preprocessing as sk_preprocessing

from .columns import copy_source, feature_columns, label_columns
from .csv_chunks import CHUNK_ROWS, ChunkReader, Layout, gather
from .errors import UserError
from .fuxictr_processor import FittedNormalizer, SourceFirstFeatureProcessor
from .h5_writer import SplitWriter

DTYPES = {"str": str, "int": int, "float": float}
NO_ENCODER = (None, "null", "None", "none")  # FuxiCTR's values for "no sequence pooling"
NORMALIZERS = ("StandardScaler", "MinMaxScaler")
SPLITS = ("train", "valid", "test")


# ---- vocabularies -------------------------------------------------------------------------

def sum_by_key(keys, counts):
    """Counts of repeated keys summed: ``(distinct keys, their totals)``, first-seen order."""
    codes, uniques = pd.factorize(keys)
    return uniques, np.bincount(codes, weights=counts, minlength=len(uniques)).astype(np.int64)


class ValueCounts:
    """Counts of one column's values over chunks, for packed (``uint64``) and plain keys.
    Chunk counts wait in a list and are merged when they outnumber twice the total
    (amortised linear time); packed keys are decoded once, at the end."""

    def __init__(self):
        self.parts = {"packed": [], "plain": []}
        self.sizes = {"packed": 0, "plain": 0}
        self.merged = {"packed": 0, "plain": 0}

    def add(self, uniques, counts):
        """Distinct values [u] of one chunk and their counts int64 [u]."""
        kind = "packed" if uniques.dtype == np.uint64 else "plain"
        self.parts[kind].append((uniques, counts))
        self.sizes[kind] += len(uniques)
        if self.sizes[kind] > max(1 << 20, 3 * self.merged[kind]):
            self._merge(kind)

    def _merge(self, kind):
        parts = self.parts[kind]
        if len(parts) > 1:
            keys = np.concatenate([k for k, _ in parts]) if kind == "packed" else \
                np.concatenate([np.asarray(k, dtype=object) for k, _ in parts])
            parts[:] = [sum_by_key(keys, np.concatenate([c for _, c in parts]))]
        self.sizes[kind] = self.merged[kind] = len(parts[0][0]) if parts else 0

    def result(self):
        """Series of counts indexed by value (str for packed keys)."""
        for kind in self.parts:
            self._merge(kind)
        keys = [unpack(self.parts["packed"][0][0])] if self.parts["packed"] else []
        keys += [np.asarray(self.parts["plain"][0][0], dtype=object)] if self.parts["plain"] else []
        if not keys:
            return pd.Series([], dtype=np.int64, index=pd.Index([], dtype=object))
        counts = [c for kind in ("packed", "plain") for _, c in self.parts[kind]]
        uniques, totals = sum_by_key(np.concatenate(keys), np.concatenate(counts))
        return pd.Series(totals, index=pd.Index(uniques, dtype=object))


def unpack(keys):
    """``uint64`` keys of :func:`tokenize` -> the tokens (object array of str)."""
    return np.char.decode(np.ascontiguousarray(keys, dtype="<u8").view("S8"), "utf-8").astype(object)


def pack(tokens):
    """Tokens (str) -> ``(uint64 keys, mask of the tokens that fit in 8 bytes)``."""
    raw = np.char.encode(np.asarray(list(tokens), dtype=str), "utf-8") if len(tokens) else np.zeros(0, "S8")
    fits = np.char.str_len(raw) <= 8
    return np.ascontiguousarray(raw[fits].astype("S8")).view("<u8"), fits


def build_vocab(counts, min_freq, na_value, remap):
    """FuxiCTR's vocabulary: values seen ``>= min_freq`` times, not ``na_value``; with
    ``remap`` sorted and numbered ``1..n``, else each its own integer; ``__PAD__`` 0,
    ``__OOV__`` the largest id + 1."""
    words = counts.index[(counts.to_numpy() >= min_freq) & (counts.index != na_value)].tolist()
    if remap:
        words.sort()  # FuxiCTR sorts for a deterministic id order
        vocab = dict(zip(words, range(1, len(words) + 1)))
    else:
        vocab = dict(zip(words, map(int, words)))
    vocab["__PAD__"] = 0
    vocab["__OOV__"] = max(vocab.values()) + 1
    return vocab


def vocab_size(vocab):
    return max(vocab.values()) + 1


def add_words(vocab, words, index=None):
    """Append ``words`` missing from ``vocab`` (in their order) at the ids from ``__OOV__`` on,
    then move ``__OOV__`` past them (FuxiCTR's ``Tokenizer.add_vocab``). Mutates ``vocab``;
    ``index``: a :class:`VocabIndex` of ``vocab`` to reuse."""
    words = pd.Index(pd.unique(np.asarray(words, dtype=object)), dtype=object)
    new = words[(index or VocabIndex(vocab)).current().positions(words) < 0].tolist()
    if new:
        oov = vocab["__OOV__"]
        vocab.update(zip(new, range(oov, oov + len(new))))
        vocab["__OOV__"] = vocab_size(vocab)
    return len(new)


def merge_into(tokenizer, shared):
    """``share_embedding``: ``tokenizer``'s words join ``shared``'s vocabulary, and both then
    use that one dict (FuxiCTR's ``Tokenizer.merge_vocab``)."""
    if tokenizer.remap:
        words = [w for w in tokenizer.vocab if w not in shared.vocab]  # vocabulary-sized
        oov = shared.vocab["__OOV__"]
        shared.vocab.update(zip(words, range(oov, oov + len(words))))
    else:
        shared.vocab.update(tokenizer.vocab)
    size = vocab_size(shared.vocab)
    if shared.vocab["__OOV__"] != size - 1:
        shared.vocab["__OOV__"] = size
    tokenizer.vocab = shared.vocab


class VocabIndex:
    """Vectorised ``vocab.get(x, vocab["__OOV__"])`` over arrays (a hash index of the keys)."""

    def __init__(self, vocab):
        self.vocab = vocab
        self._build()

    def _build(self):
        self.size, self.oov = len(self.vocab), self.vocab["__OOV__"]
        self.keys = pd.Index(list(self.vocab), dtype=object)
        self.ids = np.fromiter(self.vocab.values(), dtype=np.int64, count=len(self.vocab))
        self._packed = None

    def current(self):
        """Rebuilt if the vocabulary grew since (vocabularies only grow)."""
        if len(self.vocab) != self.size or self.vocab["__OOV__"] != self.oov:
            self._build()
        return self

    def positions(self, values):
        return self.keys.get_indexer(values)

    def lookup_unique(self, uniques):
        """Distinct values [u] (or :func:`tokenize`'s ``uint64`` keys) -> ids int64 [u]."""
        if isinstance(uniques, np.ndarray) and uniques.dtype == np.uint64:
            if self._packed is None:  # the string keys that fit in 8 bytes, packed once
                is_str = np.fromiter((isinstance(k, str) for k in self.vocab), dtype=bool, count=self.size)
                keys, fits = pack(self.keys[is_str])
                self._packed = (pd.Index(keys), self.ids[is_str][fits])
            index, ids = self._packed
            pos = index.get_indexer(uniques)
            return np.where(pos >= 0, ids[pos], self.oov)
        pos = self.positions(pd.Index(uniques, dtype=object))
        return np.where(pos >= 0, self.ids[pos], self.oov)

    def __call__(self, values):
        """``values`` [n] -> ids int64 [n]; distinct values are looked up once."""
        codes, uniques = pd.factorize(values)
        return self.lookup_unique(uniques)[codes]


class KeyTable:
    """Provisional ids ``1, 2, ...`` for the distinct keys of a column, in first-seen order:
    packed ``uint64`` tokens in a pandas hash table, other keys in a dict."""

    def __init__(self):
        self.packed = hashtable.Int64HashTable()
        self.plain = {}
        self.size = 0
        self.keys = {"packed": [], "plain": []}  # (keys, their ids) as added

    def ids(self, uniques):
        """Distinct keys [u] -> their provisional ids int64 [u] (new keys get new ids)."""
        packed = uniques.dtype == np.uint64
        if packed:
            keys = uniques.view(np.int64)
            ids = np.asarray(self.packed.lookup(keys), dtype=np.int64)
        else:
            keys = np.asarray(uniques, dtype=object)
            ids = np.fromiter(map(self.plain.get, keys.tolist(), itertools.repeat(-1)), dtype=np.int64,
                              count=len(keys))
        new = ids < 0
        if new.any():
            fresh = np.arange(self.size + 1, self.size + 1 + int(new.sum()), dtype=np.int64)
            if packed:
                self.packed.map_keys_to_values(keys[new], fresh)
            else:
                self.plain.update(zip(keys[new].tolist(), fresh.tolist()))
            self.keys["packed" if packed else "plain"].append((uniques[new], fresh))
            ids[new] = fresh
            self.size += len(fresh)
        return ids

    def final_ids(self, lookup, is_na=None):
        """``table`` int64 [size + 1]: ``table[provisional id]`` = ``lookup(keys)``, 0 for
        ``table[0]`` and for the keys where ``is_na(keys)``."""
        table = np.zeros(self.size + 1, dtype=np.int64)
        for kind, parts in self.keys.items():
            if parts:
                keys = np.concatenate([k for k, _ in parts]) if kind == "packed" else \
                    np.concatenate([np.asarray(k, dtype=object) for k, _ in parts])
                ids = np.concatenate([i for _, i in parts])
                final = lookup(keys)
                if is_na is not None:
                    final[is_na(keys)] = 0
                table[ids] = final
        return table


def load_pretrained(tokenizer, name, dtype, src, dst, freeze):
    """FuxiCTR's ``load_pretrained_embedding``: the table's keys extend the vocabulary; rows
    of ``dst[name]`` ``[vocab_size, dim]`` are the table's vectors (a repeated key: its last
    vector), zero elsewhere (random ``N(0, 1e-4)`` but a zero padding row unless ``freeze``)."""
    with h5py.File(src, "r") as hf:
        keys = hf["key"][:].astype(dtype).tolist()  # the cast FuxiCTR applies (int <-> str ids)
        table = hf["value"][:]
    last = dict(zip(keys, range(len(keys))))  # first-seen key order, last row per key
    add_words(tokenizer.vocab, list(last))
    size = vocab_size(tokenizer.vocab)
    if freeze:
        matrix = np.zeros((size, table.shape[1]))
    else:
        matrix = np.random.normal(loc=0, scale=1.e-4, size=(size, table.shape[1]))
        matrix[tokenizer.vocab["__PAD__"], :] = 0.
    ids = VocabIndex(tokenizer.vocab).lookup_unique(list(last))
    matrix[ids] = table[np.fromiter(last.values(), dtype=np.int64, count=len(last))]
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with h5py.File(dst, "a") as hf:
        hf.create_dataset(name, data=matrix)


def save_vocab(processor, path):
    """``feature_vocab.json`` byte for byte as FuxiCTR's ``save_vocab`` writes it (``json.dumps``
    with ``indent=4`` of each vocabulary sorted by id), with C-speed key quoting instead of
    the pure-Python indenting encoder."""
    blocks = []
    for feature, spec in processor.feature_map.features.items():
        if spec["type"] not in ("categorical", "sequence"):
            continue
        items = sorted(processor.processor_dict[feature + "::tokenizer"].vocab.items(), key=lambda x: x[1])
        keys = [k if isinstance(k, str) else json.dumps(k) for k, _ in items]  # JSON's key conversion
        lines = list(map("        {}: {}".format, map(encode_basestring_ascii, keys), map(str, (v for _, v in items))))
        body = "{\n" + ",\n".join(lines) + "\n    }" if lines else "{}"
        blocks.append(f"    {encode_basestring_ascii(feature)}: {body}")
    with open(path, "w") as f:
        f.write("{\n" + ",\n".join(blocks) + "\n}" if blocks else "{}")


# ---- the build ----------------------------------------------------------------------------

class StreamingBuilder:
    """One dataset's two-pass build into ``<data_root>/<dataset_id>`` (``build_params`` as for
    FuxiCTR's ``FeatureProcessor`` and ``build_dataset``; ``chunk_rows`` rows per read)."""

    def __init__(self, build_params, chunk_rows=CHUNK_ROWS, workers=1):
        self.params = build_params
        self.name = build_params["dataset_id"]
        self.chunk_rows = CHUNK_ROWS if chunk_rows is None else chunk_rows
        for key, value in (("chunk_rows", self.chunk_rows), ("build_workers", workers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"{self.name}: {key} must be a positive integer, got {value!r}")
        for key in ("valid_size", "test_size"):
            if build_params.get(key):
                raise UserError(f"{self.name}: {key} (splitting the train file) is not supported by "
                                "the streaming build; set `build: fuxictr` or split the CSV")
        self.labels = label_columns(build_params)
        self.cols = feature_columns(build_params)
        self.dtypes = {c["name"]: self._dtype(c) for c in self.labels + self.cols}
        for col in self.cols:
            self._check_column(col)
        self.processor = SourceFirstFeatureProcessor(**dict(build_params, feature_cols=self.cols))
        self.processor.dtype_dict = dict(self.dtypes)
        self.data_dir = self.processor.data_dir
        self.active = [c for c in self.cols if c.get("active", True)]
        self.reader = ChunkReader(self.name, self.labels, self.cols, self.dtypes, build_params.get("sep", ","),
                                  build_params.get("nrows"), self.chunk_rows, workers)
        self._indexes = {}

    def _dtype(self, col):
        dtype = col.get("dtype")
        if dtype in DTYPES.values():
            return dtype
        if dtype not in DTYPES:
            raise UserError(f"{self.name}: column {col.get('name')!r} has dtype {dtype!r}; "
                            "use str, int or float")
        return DTYPES[dtype]

    def _check_column(self, col):
        name = col["name"]
        if col.get("preprocess") and not copy_source(col):
            raise UserError(f"{self.name}: {name}: preprocess {col['preprocess']!r} is not supported "
                            "(only copy_from(column))")
        if col.get("type") not in ("meta", "numeric", "categorical", "sequence"):
            raise UserError(f"{self.name}: {name}: type {col.get('type')!r} is not one of meta, numeric, "
                            "categorical, sequence")
        if "category_processor" in col:
            raise UserError(f"{self.name}: {name}: category_processor is not supported (FuxiCTR 2.0.4 "
                            "fits it but cannot transform it)")
        if col.get("type") == "sequence" and not col.get("splitter"):
            raise UserError(f"{self.name}: sequence column {name} needs a splitter (e.g. splitter: ^)")
        if col.get("type") == "sequence" and col.get("padding", "post") not in ("pre", "post"):
            raise UserError(f"{self.name}: {name}: padding must be pre or post, got {col.get('padding')!r}")
        if "normalizer" in col and col["normalizer"] not in NORMALIZERS:
            raise UserError(f"{self.name}: {name}: normalizer must be one of {', '.join(NORMALIZERS)}, "
                            f"got {col['normalizer']!r}")

    # -- pass 1 -------------------------------------------------------------------------

    def fit(self, train_path, writer=None):
        """Pass 1 over the train file: the vocabularies, normalizers and feature map. With
        ``writer``, also the train split's arrays, categorical and sequence ids being
        provisional (first-seen order, from 1; see :meth:`remap_train`): the train file is
        then read and tokenized once."""
        counts = {c["name"]: ValueCounts() for c in self.active
                  if c["type"] in ("categorical", "sequence") or (c["type"] == "meta" and c.get("remap", True))}
        self.provisional = {name: KeyTable() for name in counts} if writer is not None else {}
        longest = {c["name"]: 0 for c in self.active if c["type"] == "sequence"}
        scalers = {c["name"]: getattr(sk_preprocessing, c["normalizer"])()
                   for c in self.active if c["type"] == "numeric" and "normalizer" in c}
        pad = writer is not None  # provisional ids are written only in the one-pass build
        layout = [Layout(c["name"], c["type"], c["splitter"], c.get("max_len") or 0 if pad else 0,
                         c.get("padding", "post"))
                  if c["type"] == "sequence" else Layout(c["name"], c["type"]) for c in self.active]
        for chunk in self.reader.chunks(train_path, layout):
            out = {}
            for col in self.active:
                name, part = col["name"], chunk[col["name"]]
                if col["type"] in ("sequence", "categorical"):
                    counts[name].add(part.uniques, part.counts)
                    if col["type"] == "sequence":
                        longest[name] = max(longest[name], part.longest)
                    if writer is not None:
                        ids = self.provisional[name].ids(part.uniques)
                        out[name] = gather(ids, part.padded) if col["type"] == "sequence" else ids[part.codes]
                elif name in counts:  # a meta column to remap
                    codes, uniques = pd.factorize(part)
                    counts[name].add(uniques, np.bincount(codes, minlength=len(uniques)))
                    if writer is not None:
                        out[name] = self.provisional[name].ids(uniques)[codes]
                elif col["type"] == "numeric":
                    values = part.astype(float)
                    finite = values[~np.isnan(values)]
                    if name in scalers and len(finite):
                        scalers[name].partial_fit(finite.reshape(-1, 1))
                    out[name] = values  # normalised by remap_train
                else:  # a meta column kept as it is
                    out[name] = part.astype(self.dtypes[name])
            if writer is not None:
                for label in self.labels:
                    out[label["name"]] = chunk[label["name"]]
                writer.append(out)
        self._make_vocabularies({k: v.result() for k, v in counts.items()}, longest, scalers)

    def remap_train(self, slice_rows):
        """Provisional ids -> final ids in the train split's H5 file(s), ``slice_rows`` rows at a
        time: a lookup table per column (the final id of each provisional one; 0 stays the
        padding, an NA token becomes it); numeric columns normalised."""
        tokenizers = self.processor.processor_dict
        tables = {}
        for name, keys in self.provisional.items():
            tokenizer = tokenizers[name + "::tokenizer"]
            na = tokenizer._na_value if self.processor.feature_map.features[name]["type"] == "sequence" else None
            tables[name] = keys.final_ids(self._index(tokenizer.vocab).lookup_unique,
                                          (lambda k, na=na: self._is_na(k, na)) if na is not None else None)
        normalizers = {k.split("::")[0]: v for k, v in tokenizers.items() if k.endswith("::normalizer")}
        if int(self.params.get("data_block_size") or 0) > 0:
            files = sorted(glob.glob(os.path.join(self.data_dir, "train", "part_*.h5")))
        else:
            files = [os.path.join(self.data_dir, "train.h5")]
        for path in files:
            with h5py.File(path, "r+") as hf:
                for name in list(tables) + list(normalizers):
                    ds = hf[name]
                    for start in range(0, ds.shape[0], slice_rows):
                        part = ds[start:start + slice_rows]
                        ds[start:start + slice_rows] = tables[name][part] if name in tables \
                            else normalizers[name].transform(part)

    def _make_vocabularies(self, counts, longest, scalers):
        """The feature map and processor FuxiCTR's ``fit`` makes, from the pass-1 statistics."""
        fmap, tokenizers = self.processor.feature_map, self.processor.processor_dict
        min_count = self.params.get("min_categr_count", 1)
        for col in self.active:
            name, kind = col["name"], col["type"]
            if kind == "meta":
                fmap.features[name] = {"type": kind}
                if col.get("remap", True):  # FuxiCTR numbers the train ids at their first encoding
                    tokenizer = Tokenizer(min_freq=1, remap=True)
                    tokenizer.vocab = build_vocab(counts[name], 1, "", True)
                    tokenizers[name + "::tokenizer"] = tokenizer
                continue
            spec = fmap.features[name] = {"source": col.get("source", ""), "type": kind}
            if kind == "numeric":
                if "feature_encoder" in col:
                    spec["feature_encoder"] = col["feature_encoder"]
                if name in scalers:
                    normalizer = FittedNormalizer(col["normalizer"])
                    normalizer.normalizer = scalers[name]
                    tokenizers[name + "::normalizer"] = normalizer
                continue
            if kind == "categorical" and "feature_encoder" in col:
                spec["feature_encoder"] = col["feature_encoder"]
            elif kind == "sequence" and col.get("feature_encoder", "layers.MaskedAveragePooling()") not in NO_ENCODER:
                spec["feature_encoder"] = col.get("feature_encoder", "layers.MaskedAveragePooling()")
            for key in ("embedding_dim", "emb_output_dim"):
                if key in col:
                    spec[key] = col[key]
            min_freq = col.get("min_categr_count", min_count)
            na_value = col.get("fill_na", "")
            if kind == "categorical":
                tokenizer = Tokenizer(min_freq=min_freq, na_value=na_value, remap=col.get("remap", True))
            else:
                tokenizer = Tokenizer(min_freq=min_freq, splitter=col["splitter"], na_value=na_value,
                                      max_len=col.get("max_len", 0), padding=col.get("padding", "post"),
                                      remap=col.get("remap", True))
                if not tokenizer.max_len:
                    tokenizer.max_len = longest[name]
            try:
                tokenizer.vocab = build_vocab(counts[name], min_freq, na_value, tokenizer.remap)
            except ValueError as exc:  # remap: false with ids that are not integers
                raise UserError(f"{self.name}: building H5 from CSV failed: {name}: remap: false needs integer "
                                f"ids ({exc})") from None
            if "share_embedding" in col:
                spec["share_embedding"] = shared_name = col["share_embedding"]
                shared = tokenizers.get(shared_name + "::tokenizer")
                if shared is None or fmap.features.get(shared_name, {}).get("type") not in ("categorical", "sequence"):
                    raise UserError(f"{self.name}: {name}: share_embedding {shared_name!r} must name a "
                                    "categorical or sequence column configured before it")
                merge_into(tokenizer, shared)
                fmap.features[shared_name].update({"oov_idx": shared.vocab["__OOV__"],
                                                   "vocab_size": vocab_size(shared.vocab)})
            elif "pretrained_emb" in col:
                spec["pretrained_emb"] = "pretrained_emb.h5"
                spec["freeze_emb"] = col.get("freeze_emb", True)
                load_pretrained(tokenizer, name, self.dtypes[name], col["pretrained_emb"],
                                os.path.join(self.data_dir, "pretrained_emb.h5"), col.get("freeze_emb", True))
            spec.update({"padding_idx": 0, "oov_idx": tokenizer.vocab["__OOV__"],
                         "vocab_size": vocab_size(tokenizer.vocab)})
            if kind == "sequence":
                spec["max_len"] = tokenizer.max_len
            tokenizers[name + "::tokenizer"] = tokenizer
        for name, spec in fmap.features.items():  # shared vocabularies: their final size
            if spec["type"] == "numeric":
                fmap.total_features += 1
            elif spec["type"] in ("categorical", "sequence"):
                if "share_embedding" in spec:
                    tokenizer = tokenizers[name + "::tokenizer"]
                    tokenizer.vocab = tokenizers[spec["share_embedding"] + "::tokenizer"].vocab
                    spec.update({"oov_idx": tokenizer.vocab["__OOV__"], "vocab_size": vocab_size(tokenizer.vocab)})
                else:
                    fmap.total_features += spec["vocab_size"]
        fmap.num_fields = fmap.get_num_fields()
        fmap.set_column_index()

    # -- pass 2 -------------------------------------------------------------------------

    def _index(self, vocab):
        """The (cached, current) :class:`VocabIndex` of ``vocab``; shared columns share one."""
        index = self._indexes.get(id(vocab))  # the tokenizers keep each dict alive: ids are stable
        if index is None:
            index = self._indexes[id(vocab)] = VocabIndex(vocab)
        return index.current()

    def layout(self):
        """How pass 2 tokenizes each column (after :meth:`fit`: the tokenizers' max_len)."""
        tokenizers, layout = self.processor.processor_dict, []
        for name, spec in self.processor.feature_map.features.items():
            tokenizer = tokenizers.get(name + "::tokenizer")
            if spec["type"] == "sequence":
                layout.append(Layout(name, "sequence", tokenizer._splitter, tokenizer.max_len, tokenizer.padding))
            elif spec["type"] == "categorical":
                layout.append(Layout(name, "categorical"))
        return layout

    def encode(self, chunk, split):
        """One tokenized chunk (:meth:`layout`) -> ``{column: array}`` as FuxiCTR's
        ``transform`` returns: ids int64 ``[rows]``, sequences int32 ``[rows, max_len]``,
        numbers and labels float64."""
        tokenizers, out = self.processor.processor_dict, {}
        index = self._index
        for name, spec in self.processor.feature_map.features.items():
            if name not in chunk:
                continue
            part, kind = chunk[name], spec["type"]
            tokenizer = tokenizers.get(name + "::tokenizer")
            if kind == "meta":
                if tokenizer is None:
                    out[name] = part.astype(self.dtypes[name])
                else:
                    if split != "train":  # FuxiCTR's encode_meta adds unseen ids, in first-seen order
                        add_words(tokenizer.vocab, part, index(tokenizer.vocab))
                    out[name] = index(tokenizer.vocab)(part)
            elif kind == "numeric":
                values = part.astype(float)
                normalizer = tokenizers.get(name + "::normalizer")
                out[name] = normalizer.transform(values) if normalizer is not None else values
            elif kind == "categorical":
                out[name] = index(tokenizer.vocab).lookup_unique(part.uniques)[part.codes]
            else:
                ids = index(tokenizer.vocab).lookup_unique(part.uniques)
                ids[self._is_na(part.uniques, tokenizer._na_value)] = 0  # an NA token pads
                out[name] = gather(ids, part.padded)
        for label in self.processor.feature_map.labels:
            if label in chunk:
                out[label] = chunk[label]
        return out

    @staticmethod
    def _is_na(uniques, na_value):
        if uniques.dtype != np.uint64:
            return np.asarray(uniques, dtype=object) == na_value
        key, fits = pack([na_value]) if isinstance(na_value, str) else (None, [False])
        return uniques == key[0] if fits[0] else np.zeros(len(uniques), dtype=bool)

    def transform(self, path, split, chunks=None):
        """Encode and write one split (``chunks``: its tokenized chunks, if already being read)."""
        writer = SplitWriter(self.data_dir, split, self.params.get("data_block_size", 0))
        try:
            for chunk in chunks if chunks is not None else self.reader.chunks(path, self.layout()):
                writer.append(self.encode(chunk, split))
        finally:
            writer.close()
        return writer.rows

    def build(self, paths):
        """Build from ``{"train_data": csv, "valid_data": csv or None, ...}``; returns the
        processor (its ``data_dir`` holds the result)."""
        os.makedirs(self.data_dir, exist_ok=True)
        started = time.time()
        # one pass over train where every sequence has its max_len (else pass 1 finds it)
        one_pass = all(c.get("max_len") for c in self.active if c["type"] == "sequence")
        done, ahead = {}, {}
        if one_pass:
            writer = SplitWriter(self.data_dir, "train", self.params.get("data_block_size", 0))
            try:
                self.fit(paths["train_data"], writer)
            finally:
                writer.close()
            # the workers read the next split while this process rewrites the train ids
            upcoming = [paths.get(s + "_data") for s in SPLITS[1:]]
            upcoming = [p for p in upcoming if p and p != paths["train_data"]]
            if upcoming:
                ahead[upcoming[0]] = self.reader.chunks(upcoming[0], self.layout())
            self.remap_train(self.chunk_rows)
            done[paths["train_data"]] = "train"
            logging.info("Streaming build %s: vocabularies and train, %d rows in %.1fs", self.name,
                         writer.rows, time.time() - started)
        else:
            self.fit(paths["train_data"])
            logging.info("Streaming build %s: vocabularies in %.1fs", self.name, time.time() - started)
        for split in SPLITS:
            path = paths.get(split + "_data")
            if not path or (split == "train" and one_pass):
                continue
            if path in done and done[path] != "train":  # BARS's valid = test: the same arrays
                self._copy_split(done[path], split)
            else:
                t0 = time.time()
                rows = self.transform(path, split, ahead.pop(path, None))
                logging.info("Streaming build %s: %s, %d rows in %.1fs", self.name, split, rows, time.time() - t0)
                done[path] = split
        save_vocab(self.processor, self.processor.vocab_file)
        self.processor.feature_map.save(self.processor.json_file)
        self.processor.save_pickle(self.processor.pickle_file)
        logging.info("Streaming build %s done in %.1fs", self.name, time.time() - started)
        return self.processor

    def _copy_split(self, source, split):
        if int(self.params.get("data_block_size") or 0) > 0:
            if os.path.isdir(os.path.join(self.data_dir, source)):
                shutil.copytree(os.path.join(self.data_dir, source), os.path.join(self.data_dir, split))
        else:
            shutil.copyfile(os.path.join(self.data_dir, source + ".h5"), os.path.join(self.data_dir, split + ".h5"))


def build_streaming(build_params, paths, chunk_rows=CHUNK_ROWS, workers=1):
    """Build ``<data_root>/<dataset_id>`` from the CSVs in ``paths`` (``workers`` processes
    tokenizing chunks); returns the processor."""
    builder = StreamingBuilder(build_params, chunk_rows, workers)
    try:
        return builder.build(paths)
    finally:
        builder.reader.close()
