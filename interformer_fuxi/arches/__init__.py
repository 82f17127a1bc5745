"""InterFormer's arches (Figure 1): one ``nn.Module`` per arch, composed in ``models.interformer``."""
from .cross_arch import CrossArch
from .early_aggregation import EarlyAggregation
from .feature_arch import FeatureArch
from .interaction_arch import InteractionArch
from .pooled_feature_arch import PooledFeatureArch
from .sequence_arch import SequenceArch
from .target_sequences import resolve_fields, resolve_groups, shared_targets

__all__ = ["CrossArch", "EarlyAggregation", "FeatureArch", "InteractionArch", "PooledFeatureArch",
           "SequenceArch", "resolve_fields", "resolve_groups", "shared_targets"]
