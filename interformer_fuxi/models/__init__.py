"""Built-in models; importing this module registers them for ``model:`` in configs."""
from .base import CTRModel  # noqa: F401
from .dcnv2 import DCNv2  # noqa: F401
from .dhen_model import DHEN  # noqa: F401
from .din import DIN  # noqa: F401
from .dot import DOT  # noqa: F401
from .interformer import InterFormer  # noqa: F401
from .transact import TransAct  # noqa: F401
from .wukong import WuKong  # noqa: F401
