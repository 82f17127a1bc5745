"""DIN in FuxiCTR's model-zoo layout; the implementation lives in ``interformer_fuxi.models``."""
from interformer_fuxi.models import DIN  # noqa: F401

__all__ = ["DIN"]
