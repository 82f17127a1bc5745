"""DOT (DLRM, Naumov et al. 2019) as a FuxiCTR 2.0 model: the paper's first baseline.

    Z = PooledFeatureArch(inputs)              # [B, m, d]: dense token, sparse tokens, pooled sequences
    y = sigmoid(TopMLP([x_dense ‖ triu(Z Zᵀ)]))  # x_dense only when the data has numeric features
"""
import torch
from fuxictr.pytorch.layers import MLP_Block

from ..arches import PooledFeatureArch
from ..layers import DotInteraction
from ..registry import register
from .base import CTRModel


@register
class DOT(CTRModel):
    """DLRM-style DOT; constructor keywords mirror the YAML keys."""

    def __init__(self, feature_map, model_id="DOT", gpu=-1, learning_rate=1e-3, embedding_dim=16,
                 embedding_initializer="partial(nn.init.normal_, std=0.05)", bottom_hidden_units=[64],
                 top_hidden_units=[256, 128], hidden_activations="ReLU", net_dropout=0.0,
                 embedding_regularizer=None, net_regularizer=None, **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, embedding_regularizer=embedding_regularizer,
                         net_regularizer=net_regularizer, **kwargs)
        self.feature_arch = PooledFeatureArch(feature_map, embedding_dim, bottom_hidden_units,
                                              hidden_activations, embedding_initializer)
        m = self.feature_arch.num_tokens
        self.interaction = DotInteraction(m, embedding_dim, num_outputs=0)
        self.has_dense = self.feature_arch.dense_token is not None
        top_in = self.interaction.num_pairs + (embedding_dim if self.has_dense else 0)
        self.top_mlp = MLP_Block(top_in, top_hidden_units, hidden_activations, output_dim=1,
                                 dropout_rates=net_dropout)
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.model_to_device()

    def forward(self, inputs):
        Z = self.feature_arch(self.get_inputs(inputs))
        parts = ([Z[:, 0]] if self.has_dense else []) + [self.interaction.pairwise(Z)]
        return {"y_pred": self.output_activation(self.top_mlp(torch.cat(parts, dim=-1)))}
