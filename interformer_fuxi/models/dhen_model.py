"""DHEN (Zhang et al. 2022) as a FuxiCTR 2.0 model: stacked DHEN layers on feature tokens.

    Z = PooledFeatureArch(inputs)       # [B, m, d]
    Z = DHEN_layers(Z)                  # each: LayerNorm(DOT(Z) + DCN(Z) + Z), m -> m tokens
    y = sigmoid(MLP(flatten(Z)))

The DHEN layer is the one InterFormer's Interaction Arch uses (``layers.DHEN``).
"""
from fuxictr.pytorch.layers import MLP_Block

from ..arches import PooledFeatureArch
from ..layers import DHEN as DHENStack
from ..registry import register
from .base import CTRModel


@register
class DHEN(CTRModel):
    """DHEN baseline; constructor keywords mirror the YAML keys."""

    def __init__(self, feature_map, model_id="DHEN", gpu=-1, learning_rate=1e-3, embedding_dim=16,
                 embedding_initializer="partial(nn.init.normal_, std=0.05)", dhen_layers=2, low_rank=32,
                 bottom_hidden_units=[64], head_hidden_units=[256, 128], hidden_activations="ReLU",
                 net_dropout=0.0, embedding_regularizer=None, net_regularizer=None, **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, embedding_regularizer=embedding_regularizer,
                         net_regularizer=net_regularizer, **kwargs)
        if not 1 <= dhen_layers:
            raise ValueError(f"dhen_layers must be at least 1, got {dhen_layers}")
        self.feature_arch = PooledFeatureArch(feature_map, embedding_dim, bottom_hidden_units,
                                              hidden_activations, embedding_initializer)
        m = self.feature_arch.num_tokens
        self.dhen = DHENStack(m, embedding_dim, m, num_layers=dhen_layers, low_rank=low_rank)
        self.head = MLP_Block(m * embedding_dim, head_hidden_units, hidden_activations, output_dim=1,
                              dropout_rates=net_dropout)
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.model_to_device()

    def forward(self, inputs):
        Z = self.dhen(self.feature_arch(self.get_inputs(inputs)))
        return {"y_pred": self.output_activation(self.head(Z.flatten(1)))}
