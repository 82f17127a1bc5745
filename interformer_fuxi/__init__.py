"""InterFormer (arXiv 2411.09852) for FuxiCTR 2.0 and the BARS benchmark."""
__version__ = "0.1.0"


def __getattr__(name):
    # imported on first use, so that the data modules (and the build's worker processes) do
    # not import torch
    if name == "InterFormer":
        from .models import InterFormer
        return InterFormer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["InterFormer"]
