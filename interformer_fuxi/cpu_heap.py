"""Keep freed memory in the process heap on Linux (glibc), for CPU training.

glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh
``mmap`` and gives it back with ``munmap`` when freed, so a training step whose activations
are tens of MB each (batch 2048 x 100 tokens x 64 floats is 52 MB) pays page faults and
zeroing for every tensor, every step: on the 2-core benchmark machine this halves the
training speed of InterFormer and DIN alike (``docs/performance.md``). Turning ``mmap`` off
for the heap and never trimming it lets freed blocks be reused, as a caching allocator
would; the cost is a higher resident peak (freed memory stays with the process).
Set ``INTERFORMER_CPU_HEAP=0`` to keep glibc's defaults.

A kept heap must be given back before DataLoader workers fork (``num_workers > 0``): the
parent rewrites its reused pages during the epoch, and every page the workers still share
is then copied. FuxiCTR's DMIN on AmazonElectronics_x1 (batch 1024, a 16 GB heap on the
BARS check's stand-in data) was killed for memory at its second epoch's fork on this 24 GB
machine; with :func:`release_freed_memory` trimming first it finishes.
"""
import ctypes
import ctypes.util
import logging
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_applied = False
_libc = None


def keep_freed_memory():
    """Apply once per process; True when glibc accepted the settings."""
    global _applied
    if _applied or not sys.platform.startswith("linux") or os.environ.get("INTERFORMER_CPU_HEAP") == "0":
        return _applied
    global _libc
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.malloc_trim  # noqa: B018  (release_freed_memory needs it too)
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    # mallopt takes an int and glibc stores the threshold as a size_t: -1 is the largest
    # threshold, so the heap is never trimmed. (A threshold of 1 GiB was still crossed in
    # DIN's steps, whose heap peaks above 4 GB: the trimmed pages were faulted in again.)
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))
    if _applied:
        _libc = libc
        logging.debug("glibc heap: mmap off, never trimmed")
    return _applied


def release_freed_memory():
    """Give the kept heap's free pages back to the system (a no-op unless kept)."""
    if _libc is not None:
        _libc.malloc_trim(0)


def before_workers_fork(data_loader):
    """Trim the kept heap if iterating ``data_loader`` is about to fork worker processes."""
    if getattr(data_loader, "num_workers", 0) > 0:
        release_freed_memory()
