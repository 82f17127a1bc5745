"""The C++ kernels of the CPU fast paths (``interformer_fuxi/kernels``), built on first use.

PyTorch's extension loader compiles a kernel once per machine, for the instruction set
PyTorch itself runs on this CPU, and caches it under ``~/.cache/torch_extensions`` (10–20 s
each, the first time). Without a C++ compiler, or when its environment switch is ``0``, a
kernel is None (with one warning) and its callers keep their PyTorch path.
"""
import glob
import hashlib
import logging
import os
import threading
from typing import Optional

import torch

from .capture import capturing_graph

_KERNELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")
ISA_FLAGS = {  # PyTorch's own CPU capability: the instructions this machine runs
    "AVX512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}


class CpuKernel:
    """``torch.ops.<library>`` built from ``kernels/<source>`` on the first call.

    Args:
        source (str): the C++ file under ``interformer_fuxi/kernels``.
        library (str): the ``TORCH_LIBRARY`` name it registers.
        switch (str): environment variable that turns it off when ``0``.
        fallback (str): what runs without it, for the warning (e.g. "scaled_dot_product_attention").
        what (str): the kernel in words, for the log.
    """

    def __init__(self, source: str, library: str, switch: str, fallback: str, what: str) -> None:
        self.source, self.library, self.switch, self.fallback, self.what = source, library, switch, fallback, what
        self._lock = threading.Lock()
        self._built = {}

    def __call__(self):
        """The ops (``torch.ops.<library>``), or None where they cannot be built or are off."""
        if os.environ.get(self.switch, "1") == "0":
            return None
        if "ops" not in self._built:  # every call asks: the lock only until the first answer
            with self._lock:
                if "ops" not in self._built:
                    self._built["ops"] = self._build()
        return self._built["ops"]

    def runs_on(self, *tensors: torch.Tensor) -> bool:
        """Whether the kernel can take these tensors: float32 on the CPU, in eager mode without
        autocast, and the kernel built (the callers check their shapes)."""
        return (all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
                and not capturing_graph() and not torch.is_autocast_enabled("cpu")
                and self() is not None)

    def _build(self):
        from torch.utils.cpp_extension import load
        capability = torch.backends.cpu.get_cpu_capability()
        # one build per instruction set: a cache shared between machines never runs a foreign one
        name = f"{self.library}_{capability.lower()}"
        logging.info("Loading the C++ kernel %s, the %s (compiled on first use, then cached)", name, self.what)
        # PyTorch rebuilds when the source or the flags change, not the headers it includes:
        # their digest goes into the flags
        headers = hashlib.sha1()
        for path in sorted(glob.glob(os.path.join(_KERNELS, "*.h"))):
            with open(path, "rb") as f:
                headers.update(f.read())
        flags = ["-O3", "-fopenmp", f"-DINTERFORMER_HEADERS={headers.hexdigest()[:16]}"]
        try:
            load(name=name, sources=[os.path.join(_KERNELS, self.source)], is_python_module=False,
                 verbose=False, extra_cflags=flags + ISA_FLAGS.get(capability, []))
        except Exception as error:  # no compiler, no headers, ...: the PyTorch path still works
            message = str(error).strip()
            reason = message.splitlines()[0] if message else type(error).__name__
            logging.warning("%s unavailable, using %s: %s", self.what[0].upper() + self.what[1:],
                            self.fallback, reason)
            return None
        return getattr(torch.ops, self.library)


def key_bias(key_mask: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """The additive key bias the kernels take for a boolean key mask: 0 where True, -inf where
    False (``[B, N]``); None for None."""
    if key_mask is None:
        return None
    return torch.zeros(key_mask.shape, dtype=dtype).masked_fill_(~key_mask, float("-inf"))
