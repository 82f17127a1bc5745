"""Wukong (Zhang et al. 2024) as a FuxiCTR 2.0 model: stacked Wukong layers on feature tokens.

    X = PooledFeatureArch(inputs)       # [B, m, d]
    X = WukongLayer_l(X)                # l = 1..num_layers: [FMB ‖ LCB] + shortcut, LayerNorm
    y = sigmoid(MLP(flatten(X)))
"""
from fuxictr.pytorch.layers import MLP_Block
from torch import nn

from ..arches import PooledFeatureArch
from ..layers import WukongLayer
from ..registry import register
from .base import CTRModel


@register
class WuKong(CTRModel):
    """Wukong baseline; constructor keywords mirror the YAML keys."""

    def __init__(self, feature_map, model_id="WuKong", gpu=-1, learning_rate=1e-3, embedding_dim=16,
                 embedding_initializer="partial(nn.init.normal_, std=0.05)", num_layers=2,
                 num_fmb_tokens=8, num_lcb_tokens=8, fm_rank=8, fmb_hidden_units=128,
                 bottom_hidden_units=[64], head_hidden_units=[256, 128], hidden_activations="ReLU",
                 net_dropout=0.0, embedding_regularizer=None, net_regularizer=None, **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, embedding_regularizer=embedding_regularizer,
                         net_regularizer=net_regularizer, **kwargs)
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.feature_arch = PooledFeatureArch(feature_map, embedding_dim, bottom_hidden_units,
                                              hidden_activations, embedding_initializer)
        m, n = self.feature_arch.num_tokens, num_fmb_tokens + num_lcb_tokens
        self.layers = nn.Sequential(*(
            WukongLayer(m if i == 0 else n, embedding_dim, num_fmb_tokens, num_lcb_tokens, fm_rank,
                        fmb_hidden_units, hidden_activations, net_dropout) for i in range(num_layers)))
        self.head = MLP_Block(n * embedding_dim, head_hidden_units, hidden_activations, output_dim=1,
                              dropout_rates=net_dropout)
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.model_to_device()

    def forward(self, inputs):
        X = self.layers(self.feature_arch(self.get_inputs(inputs)))
        return {"y_pred": self.output_activation(self.head(X.flatten(1)))}
