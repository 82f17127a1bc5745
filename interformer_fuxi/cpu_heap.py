"""Keep freed memory in the process heap on Linux (glibc), for CPU training.

glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh
``mmap`` and gives it back with ``munmap`` when freed, so a training step whose activations
are tens of MB each (batch 2048 x 100 tokens x 64 floats is 52 MB) pays page faults and
zeroing for every tensor, every step: on the 2-core benchmark machine this halves the
training speed of InterFormer and DIN alike (``docs/performance.md``). Turning ``mmap`` off
for the heap and never trimming it lets freed blocks be reused, as a caching allocator
would; the cost is a higher resident peak (freed memory stays with the process).
Set ``INTERFORMER_CPU_HEAP=0`` to keep glibc's defaults.
"""
import ctypes
import ctypes.util
import logging
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_applied = False


def keep_freed_memory():
    """Apply once per process; True when glibc accepted the settings."""
    global _applied
    if _applied or not sys.platform.startswith("linux") or os.environ.get("INTERFORMER_CPU_HEAP") == "0":
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 30))
    if _applied:
        logging.debug("glibc heap: mmap off, trim threshold 1 GiB")
    return _applied
