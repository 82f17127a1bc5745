"""A CSV read as tokenized chunks, in order, by one process or several.

The per-row work of a build (parsing, FuxiCTR's preprocessing, splitting sequences into
tokens, hashing them, padding) needs nothing but the chunk's own rows, so it runs here,
apart from the vocabulary bookkeeping, which must see the chunks in file order
(:mod:`interformer_fuxi.stream_build`). With ``workers > 1`` the file is cut into byte ranges
at line ends and the ranges are tokenized by a pool of processes, at most ``2 × workers``
chunks in flight, so that memory stays bounded by the chunk size. A file that holds a quote
character (a quoted field may span lines), a compressed file or ``nrows`` is read by one
process, as ``pd.read_csv(chunksize=...)`` reads it.

A tokenized chunk maps each active column to:

- a sequence: :class:`Tokens` with ``padded`` int32 ``[rows, max_len]``: each token's index
  in ``uniques`` plus one, 0 the padding (FuxiCTR's ``pad_sequences``);
- a categorical column: :class:`Tokens` with ``codes`` ``[rows]``, indexes into ``uniques``;
- anything else (numbers, meta columns, labels): the preprocessed values ``[rows]``.
"""
import io
import logging
import mmap
import os
import re
from collections import deque
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context

import numpy as np
import pandas as pd

from .columns import copy_source
from .errors import UserError

CHUNK_ROWS = 100_000
COMPRESSED = (".gz", ".bz2", ".zip", ".xz", ".zst", ".tar")
# BYTE_MASKS[k]: the low k bytes of a uint64 (k = 0..8)
BYTE_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)


@contextmanager
def parse_errors(path, where=""):
    """pandas' parse and decode errors as one line naming the file (and ``where`` in it)."""
    try:
        yield
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot parse the CSV{where} ({str(exc).splitlines()[0]})") from None


@dataclass
class Tokens:
    """One column of a chunk, factorized: ``uniques`` [u] (str objects, or packed ``uint64``
    keys), ``counts`` int64 [u] (occurrences, truncated tokens included), then ``codes``
    [rows] (a categorical column) or ``padded`` int32 [rows, max_len] and ``longest`` (the
    longest row, FuxiCTR counting an empty row as 1; a sequence)."""
    uniques: np.ndarray
    counts: np.ndarray
    codes: np.ndarray = None
    padded: np.ndarray = None
    longest: int = 0


@dataclass(frozen=True)
class Layout:
    """What to make of one column: ``kind`` "sequence" (with ``splitter``, ``max_len`` (0:
    no padding yet), ``padding``), "categorical", or "raw"."""
    name: str
    kind: str
    splitter: str = None
    max_len: int = 0
    padding: str = "post"


class ChunkReader:
    """Reads one dataset's CSVs as FuxiCTR's builder reads them (every column as a string,
    pandas' NA values), then preprocesses (:meth:`preprocess`) and tokenizes each chunk.

    Args:
        name: the dataset id, for messages.
        labels, cols: the label and feature column dicts of the dataset config.
        dtypes: ``{column: str | int | float}``.
        sep: the CSV separator; ``nrows``: read only that many rows (one process).
        chunk_rows: rows per chunk (with several workers: about that many).
        workers: processes tokenizing chunks (1: this process).
    """

    def __init__(self, name, labels, cols, dtypes, sep=",", nrows=None, chunk_rows=CHUNK_ROWS, workers=1):
        self.name, self.labels, self.cols, self.dtypes = name, labels, cols, dtypes
        self.sep, self.nrows, self.chunk_rows, self.workers = sep, nrows, chunk_rows, workers
        self._pool = None  # started at the first file that is cut into ranges, kept until close()

    def __getstate__(self):  # what a worker receives: the reading rules, not the pool
        return dict(self.__dict__, _pool=None)

    def close(self):
        """Stop the worker processes (and drop the chunks they had not delivered)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # -- reading ------------------------------------------------------------------------

    def _read_csv(self, source, path, where="", **kwargs):
        with parse_errors(path, where):
            return pd.read_csv(source, sep=self.sep, usecols=lambda c: c in self.dtypes, dtype=object, **kwargs)

    def frames(self, path):
        """Preprocessed DataFrames of up to ``chunk_rows`` rows, in order, by this process; a
        header-only file gives one empty frame."""
        empty = True
        with self._read_csv(path, path, chunksize=self.chunk_rows, nrows=self.nrows) as reader:
            while True:
                with parse_errors(path):
                    chunk = next(reader, None)
                if chunk is None:
                    break
                empty = False
                yield self.preprocess(chunk)
        if empty:
            yield self.preprocess(self._read_csv(path, path, nrows=0))

    def chunks(self, path, layout):
        """An iterator of the tokenized chunks of ``path`` (see the module docstring), in file
        order; ``layout``: one :class:`Layout` per active column. With workers, the first
        chunks are being read as soon as it is made, so that making it early overlaps the
        reading with other work."""
        ranges = self._ranges(path) if self.workers > 1 else None
        if not ranges or len(ranges[1]) < 2:
            return (tokenize_frame(df, layout) for df in self.frames(path))
        header, spans = ranges
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=worker_context())
        tasks = ((self, path, header, start, end, layout) for start, end in spans)
        try:
            results = OrderedResults(self._pool, _tokenize_range, tasks, 2 * self.workers)
        except BrokenProcessPool:  # a worker died while the first chunks were being submitted
            results = None
        return self._or_one_process(results, path, layout)

    def _or_one_process(self, results, path, layout):
        """``results``; or, where the workers cannot start (``results`` is None, or the first result
        breaks the pool: a script read from stdin, or one
        without an ``if __name__ == "__main__":`` guard, which they would run again), the
        chunks read by this process, with a warning."""
        try:
            if results is None:
                raise BrokenProcessPool("a worker process died at start")
            first = next(results)
        except StopIteration:
            return
        except BrokenProcessPool:
            logging.warning("%s: the build's worker processes could not start (run it from a script "
                            "file with an `if __name__ == \"__main__\":` guard); reading with one process",
                            self.name)
            self.close()
            self.workers = 1
            yield from (tokenize_frame(df, layout) for df in self.frames(path))
            return
        yield first
        yield from results

    def _ranges(self, path):
        """``(header bytes, [(start, end), ...])``: byte ranges of about ``chunk_rows`` rows, each
        ending at a line end; None where the file must be read by one process."""
        if self.nrows is not None or str(path).lower().endswith(COMPRESSED) or len(self.sep) != 1:
            return None
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            if size == 0:
                return None
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if m.find(b'"') >= 0:  # a quoted field may hold a line end: no cutting at line ends
                    return None
            header = f.readline()
            start = f.tell()
            sample = f.read(1 << 20)
            step = max(1, int(len(sample) / max(1, sample.count(b"\n")) * self.chunk_rows))
            spans = []
            while start < size:
                f.seek(min(start + step, size))
                f.readline()  # to the end of the line the cut falls in
                end = min(f.tell(), size)
                spans.append((start, end))
                start = end
        return header, spans

    def read_range(self, path, header, start, end):
        """The preprocessed rows of bytes ``[start, end)`` of ``path``, under its header."""
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(end - start)
        return self.preprocess(self._read_csv(io.BytesIO(header + body), path, f" in the rows from byte {start}"))

    # -- FuxiCTR's preprocess -----------------------------------------------------------

    def _fill_na(self, col, series):
        if col.get("fill_na") is not None:
            return series.fillna(col["fill_na"])
        if self.dtypes[col["name"]] is str:
            return series.fillna("")
        raise UserError(f"{self.name}: building H5 from CSV failed: column {col['name']} has empty cells; "
                        "set fill_na to allow them")

    def preprocess(self, df):
        """FuxiCTR's preprocess (with string NAs filled first): NA fill, dtype casts and
        ``copy_from`` in reverse config order; the active columns only."""
        raw = set()  # columns of Python strings only: their cast to str would change nothing
        for col in self.labels + self.cols:
            name = col["name"]
            if name in df.columns and self.dtypes[name] is str and name not in raw:
                if df[name].isnull().values.any():
                    df[name] = self._fill_na(col, df[name])
                if isinstance(col.get("fill_na", ""), str):
                    raw.add(name)
        order = self.labels + self.cols[::-1]
        for col in order:
            name = col["name"]
            if name in df.columns and name not in raw:
                if df[name].isnull().values.any():
                    df[name] = self._fill_na(col, df[name])
                df[name] = self._cast(df[name], name)
            if col.get("preprocess"):
                source = copy_source(col)
                if self.dtypes[name] is str and source in raw:
                    df[name] = df[source]
                    raw.add(name)
                else:
                    df[name] = self._cast(df[source], name)
                    raw.discard(name)
        return df.loc[:, [c["name"] for c in order if c.get("active") is not False]]

    def _cast(self, series, name):
        try:
            return series.astype(self.dtypes[name])
        except (ValueError, TypeError) as exc:
            raise UserError(f"{self.name}: building H5 from CSV failed: column {name} does not convert to "
                            f"{self.dtypes[name].__name__} "
                            f"({str(exc).splitlines()[0][:120]})") from None


def _tokenize_range(task):
    """A worker's job: one byte range read, preprocessed and tokenized."""
    reader, path, header, start, end, layout = task
    return tokenize_frame(reader.read_range(path, header, start, end), layout)


def tokenize_frame(df, layout):
    """A preprocessed chunk -> ``{column: Tokens or values}`` (the module docstring); labels
    and columns not in ``layout`` pass as values."""
    out = {name: df[name].to_numpy() for name in df.columns}
    for col in layout:
        values = out[col.name]
        if col.kind == "sequence":
            codes, uniques, lengths = tokenize(values, col.splitter)
            out[col.name] = Tokens(uniques, np.bincount(codes, minlength=len(uniques)),
                                   padded=pad_ids(codes + 1, lengths, col.max_len, col.padding,
                                                  index_dtype(len(uniques) + 1)) if col.max_len else None,
                                   longest=int(np.maximum(lengths, 1).max(initial=0)))
        elif col.kind == "categorical":
            codes, uniques, _ = tokenize(values)
            out[col.name] = Tokens(uniques, np.bincount(codes, minlength=len(uniques)),
                                   codes=codes.astype(index_dtype(len(uniques))))
    return out


def index_dtype(n):
    """The smallest integer dtype for indexes ``0..n-1``: a worker's chunk crosses a pipe."""
    return np.uint8 if n <= 1 << 8 else np.uint16 if n <= 1 << 16 else np.int32


def worker_context():
    """Fresh processes, never a fork of this one (which may hold torch's threads): a fork
    server that imported this module once where there is one, else spawn."""
    if "forkserver" in get_all_start_methods():
        context = get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return get_context("spawn")


class OrderedResults:
    """``map(fn, tasks)`` on an executor, results in task order. From its creation on, up to
    ``ahead`` tasks are submitted and not yet consumed: a slow consumer holds back the
    reading, not memory."""

    def __init__(self, pool, fn, tasks, ahead):
        self.pool, self.fn, self.tasks, self.ahead = pool, fn, iter(tasks), ahead
        self.pending = deque()
        self._submit()

    def _submit(self):
        while len(self.pending) < self.ahead:
            task = next(self.tasks, None)
            if task is None:
                return
            self.pending.append(self.pool.submit(self.fn, task))

    def __iter__(self):
        return self

    def __next__(self):
        if not self.pending:
            raise StopIteration
        try:
            result = self.pending.popleft().result()
        except BaseException:
            self.close()
            raise
        self._submit()
        return result

    def close(self):
        """Cancel what was submitted and not started (the consumer stopped early)."""
        while self.pending:
            self.pending.popleft().cancel()


# ---- tokens -------------------------------------------------------------------------------

def tokenize(values, splitter=None):
    """Factorized tokens of a column: ``(codes int64 [total], uniques [u], lengths int64
    [rows])``, ``uniques[codes]`` being the tokens row after row; ``uniques`` are str
    (object array) or, packed, ``uint64`` keys (:func:`stream_build.unpack` gives their str).

    ``splitter`` None: one token per value (a categorical column). Else FuxiCTR's
    ``text.split(splitter)``, but an empty string has no token (FuxiCTR: an empty list) and
    ``"a^"`` has two (``""``, a padding token, last).

    Tokens are located in the column's UTF-8 bytes (NUL-joined; the bytes of an ASCII
    splitter never occur inside a multi-byte character) and, when none is longer than 8
    bytes, hashed as one ``uint64`` each (its bytes, zero-padded): no Python string per token. Longer tokens, a
    non-ASCII or multi-character splitter, or non-string values take ``str.split`` and a
    hash of Python strings."""
    values = np.asarray(values, dtype=object)
    packed = _tokenize_packed(values, splitter) if len(values) else None
    if packed is not None:
        return packed
    if splitter is None:
        codes, uniques = pd.factorize(values)
        return codes, np.asarray(uniques, dtype=object), np.ones(len(values), dtype=np.int64)
    nonempty = values != ""
    lengths = pd.Series(values, dtype=object).str.count(re.escape(splitter)).to_numpy(dtype=np.int64) + 1 \
        if len(values) else np.zeros(0, dtype=np.int64)
    lengths = np.where(nonempty, lengths, 0)
    kept = values[nonempty]
    tokens = np.array(splitter.join(kept.tolist()).split(splitter) if len(kept) else [], dtype=object)
    codes, uniques = pd.factorize(tokens)
    return codes, np.asarray(uniques, dtype=object), lengths


def _tokenize_packed(values, splitter):
    """:func:`tokenize` on the bytes of the column, or None where it does not apply."""
    sep = None if splitter is None else splitter.encode()
    if sep is not None and (len(sep) != 1 or sep[0] >= 0x80):
        return None
    try:
        buf = np.frombuffer(("\x00".join(values.tolist()) + "\x00").encode(), dtype=np.uint8)
    except TypeError:  # not all strings
        return None
    is_end = buf == 0
    delim = is_end if sep is None else is_end | (buf == sep[0])
    d = np.flatnonzero(delim)  # each token ends at one delimiter
    if int(is_end.sum()) != len(values):  # a value holds NUL
        return None
    end_at = is_end[d]
    start = np.empty_like(d)
    start[0], start[1:] = 0, d[:-1] + 1
    size = d - start
    if sep is None:
        keep = None
    else:  # an empty value (a row end right after a row end) has no token
        prev_end = np.empty_like(end_at)
        prev_end[0], prev_end[1:] = True, end_at[:-1]
        keep = ~(end_at & prev_end & (size == 0))
        start, size = start[keep], size[keep]
    if size.max(initial=0) > 8:
        return None
    row = np.cumsum(end_at) - end_at  # the row of each delimiter
    lengths = np.bincount(row if keep is None else row[keep], minlength=len(values)).astype(np.int64)
    # the 8 bytes from each token's start, read as one little-endian uint64, cut to its size
    padded = np.concatenate([buf, np.zeros(8, dtype=np.uint8)])
    windows = np.lib.stride_tricks.as_strided(padded, shape=(len(buf), 8), strides=(1, 1))
    key = np.ascontiguousarray(windows[start]).view("<u8").ravel() & BYTE_MASKS[size]
    codes, uniques = pd.factorize(key)
    return codes.astype(np.int64), uniques, lengths


def pad_ids(ids, lengths, max_len, padding, dtype=np.int32):
    """Ragged ids (concatenated rows) -> ``dtype [rows, max_len]``, 0-padded: FuxiCTR's
    ``pad_sequences(padding=p, truncating=p)``: ``pre`` keeps a row's last ``max_len`` ids,
    right-aligned; ``post`` its first ``max_len``, left-aligned."""
    rows = len(lengths)
    out = np.zeros((rows, max_len), dtype=dtype)
    if not len(ids) or max_len <= 0:
        return out
    row = np.repeat(np.arange(rows, dtype=np.int64), lengths)
    start = np.cumsum(lengths) - lengths
    pos = np.arange(len(ids), dtype=np.int64) - start[row]  # position of each id in its row
    if padding == "pre":
        col = pos + (max_len - lengths)[row]
        keep = col >= 0
    else:
        col = pos
        keep = col < max_len
    out[row[keep], col[keep]] = ids[keep]
    return out


def gather(ids, padded):
    """Per-unique ids int64 [u] and a chunk's ``padded`` indexes (1-based, 0 the padding)
    -> ids int32 ``[rows, max_len]``, 0 where padded."""
    table = np.zeros(len(ids) + 1, dtype=np.int32)
    table[1:] = ids
    return table[padded]
