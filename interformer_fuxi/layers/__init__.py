"""Pure-PyTorch building blocks of InterFormer (arXiv 2411.09852); see docs in each module."""
from .activation import activation
from .attention import RotaryMultiheadAttention
from .cross_net import CrossNetV2
from .dcn_interaction import DCNv2Interaction
from .dcnv2_net import DCNv2Net
from .dhen import DHEN, DHENLayer
from .dot_interaction import DotInteraction
from .first_order import FirstOrder
from .gating import Gating
from .interaction_factory import INTERACTIONS, build_interaction
from .grouping import length_groups
from .history_match import HistoryMatch
from .pffn import PFFN
from .pma import PMA
from .positions import recent_positions, recent_tokens, valid_positions
from .rope import RotaryEmbedding, rotate_half
from .sequence_merge import MaskNetMerge
from .target_attention import TargetAttention
from .target_match import TargetMatch
from .token_lce import LCE
from .wukong import WukongLayer

__all__ = [
    "activation",
    "CrossNetV2",
    "DCNv2Interaction",
    "DCNv2Net",
    "DHEN",
    "DHENLayer",
    "DotInteraction",
    "FirstOrder",
    "Gating",
    "HistoryMatch",
    "INTERACTIONS",
    "LCE",
    "MaskNetMerge",
    "PFFN",
    "PMA",
    "RotaryEmbedding",
    "RotaryMultiheadAttention",
    "TargetAttention",
    "TargetMatch",
    "WukongLayer",
    "build_interaction",
    "length_groups",
    "recent_positions",
    "recent_tokens",
    "rotate_half",
    "valid_positions",
]
