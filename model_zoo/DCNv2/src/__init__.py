"""DCNv2 in FuxiCTR's model-zoo layout; the implementation lives in ``interformer_fuxi.models``."""
from interformer_fuxi.models import DCNv2  # noqa: F401

__all__ = ["DCNv2"]
