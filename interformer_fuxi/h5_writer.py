"""Append encoded chunks to a split's H5 file(s), in FuxiCTR 2.0.4's layout.

``block_size == 0``: one ``<split>.h5`` with one dataset per column, grown chunk by chunk
(resizable datasets). ``block_size > 0``: ``<split>/part_<k>.h5``, ``k = 0, 1, ...``, each of
exactly ``block_size`` rows but the last, as FuxiCTR's ``build_dataset`` names and fills
them (its ``H5BlockDataLoader`` reads them in ``k`` order).
"""
import os

import h5py
import numpy as np

# about 1 MiB per H5 chunk: large enough for fast appends and reads, small enough to cache
CHUNK_BYTES = 1 << 20


class SplitWriter:
    """Writes ``{column: array [rows, ...]}`` dicts; the same columns in every call."""

    def __init__(self, data_dir, split, block_size=0):
        self.data_dir, self.split, self.block_size = data_dir, split, int(block_size or 0)
        self.rows = 0          # rows written to the split
        self._file = None
        self._part_rows = 0    # rows in the open file
        self._part = 0

    def _open(self):
        if self.block_size > 0:
            path = os.path.join(self.data_dir, self.split, f"part_{self._part}.h5")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._part += 1
        else:
            path = os.path.join(self.data_dir, self.split + ".h5")
        self._file = h5py.File(path, "w")
        self._part_rows = 0

    def _close_file(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def append(self, arrays):
        """Append one chunk; ``arrays`` maps column -> array with the same number of rows."""
        n = len(next(iter(arrays.values())))
        if n == 0:
            # FuxiCTR writes an empty split as a file of empty arrays, and as no blocks at all
            if self._file is None and self.rows == 0 and self.block_size <= 0:
                self._open()
                self._write(arrays)
            return
        if self._file is None:
            self._open()
        start = 0
        while True:
            room = n - start if self.block_size <= 0 else min(n - start, self.block_size - self._part_rows)
            self._write({k: v[start:start + room] for k, v in arrays.items()})
            start += room
            if start >= n:
                break
            self._close_file()  # this block is full
            self._open()
        if self.block_size > 0 and self._part_rows >= self.block_size:
            self._close_file()

    def _write(self, arrays):
        hf = self._file
        for key, arr in arrays.items():
            if key not in hf:
                row_bytes = max(1, arr.dtype.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64)))
                chunk_rows = max(1, CHUNK_BYTES // row_bytes)
                hf.create_dataset(key, shape=(0,) + arr.shape[1:], maxshape=(None,) + arr.shape[1:],
                                  dtype=arr.dtype, chunks=(chunk_rows,) + arr.shape[1:])
            ds = hf[key]
            if len(arr):
                ds.resize(self._part_rows + len(arr), axis=0)
                ds[self._part_rows:] = arr
        self._part_rows += len(next(iter(arrays.values())))
        self.rows += len(next(iter(arrays.values())))

    def close(self):
        self._close_file()
