"""InterFormer (arXiv 2411.09852) for FuxiCTR 2.0 and the BARS benchmark."""
__version__ = "0.1.0"

from .models import InterFormer  # noqa: E402,F401
