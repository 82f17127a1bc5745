"""The CPU heap setting keeps freed memory in the process, for the next step to reuse."""
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap, /proc (Linux)")

# One process fills a block larger than glibc's mmap threshold and than 1 GiB (a trim
# threshold that DIN's steps crossed), frees it, and prints whether the setting applied and
# its resident memory (MiB) with the block and after freeing it.
SCRIPT = """
import torch
from interformer_fuxi.cpu_heap import keep_freed_memory
applied = keep_freed_memory()
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 // 2 ** 20
block = torch.empty(5 * 2 ** 28, dtype=torch.uint8).fill_(1)  # 1.25 GiB
held = rss()
del block
print(applied, held, rss())
"""


def _run(**env):
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env={**os.environ, **env},
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


def test_freed_memory_stays_with_the_process():
    applied, held, after = _run()
    assert applied  # glibc (Linux)
    assert after > held - 100, (held, after)  # not given back: the next step reuses it, without page faults


def test_the_heap_setting_can_be_turned_off():
    applied, held, after = _run(INTERFORMER_CPU_HEAP="0")
    assert not applied
    assert after < held - 1000, (held, after)  # glibc's defaults: the block went back to the system


def test_the_kept_heap_is_given_back_before_data_loader_workers_fork():
    # Forked workers share the heap's pages; the parent's reuse would then copy every one.
    script = SCRIPT.replace("print(applied, held, rss())", """
from interformer_fuxi.cpu_heap import before_workers_fork
class Loader: num_workers = 0
before_workers_fork(Loader())
kept = rss()
Loader.num_workers = 2
before_workers_fork(Loader())
print(applied, held, kept, rss())
""")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()
    held, kept, trimmed = map(int, out[1:])
    assert out[0] == "True"
    assert kept > held - 100, (held, kept)  # no workers: the heap stays for the next step
    assert trimmed < held - 1000, (held, trimmed)  # workers about to fork: given back first
