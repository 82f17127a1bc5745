"""DCNv2 (Wang et al. 2021) as a FuxiCTR 2.0 model: cross network and deep network.

    x0 = flatten(PooledFeatureArch(inputs))                 # [B, m*d]
    parallel: y = sigmoid(Linear([CrossNet(x0) ‖ MLP(x0)]))
    stacked:  y = sigmoid(Linear(MLP(CrossNet(x0))))
    crossnet_only: y = sigmoid(Linear(CrossNet(x0)))

The cross layers are full rank (``low_rank: 0``) or low rank (``U V``, rank ``low_rank``);
the mixture-of-low-rank-experts variant (DCN-Mix) is not built.
"""
import torch
from fuxictr.pytorch.layers import MLP_Block
from torch import nn

from ..arches import PooledFeatureArch
from ..layers import CrossNetV2
from ..registry import register
from .base import CTRModel

STRUCTURES = ("parallel", "stacked", "crossnet_only")


@register
class DCNv2(CTRModel):
    """DCNv2 baseline; constructor keywords mirror the YAML keys."""

    def __init__(self, feature_map, model_id="DCNv2", gpu=-1, learning_rate=1e-3, embedding_dim=16,
                 embedding_initializer="partial(nn.init.normal_, std=0.05)", model_structure="parallel",
                 num_cross_layers=3, low_rank=32, parallel_dnn_hidden_units=[512, 512],
                 stacked_dnn_hidden_units=[500, 500], bottom_hidden_units=[64], hidden_activations="ReLU",
                 net_dropout=0.0, embedding_regularizer=None, net_regularizer=None, **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, embedding_regularizer=embedding_regularizer,
                         net_regularizer=net_regularizer, **kwargs)
        if model_structure not in STRUCTURES:
            raise ValueError(f"model_structure must be one of {', '.join(STRUCTURES)}, got {model_structure!r}")
        self.structure = model_structure
        self.feature_arch = PooledFeatureArch(feature_map, embedding_dim, bottom_hidden_units,
                                              hidden_activations, embedding_initializer)
        D = self.feature_arch.num_tokens * embedding_dim
        self.cross_net = CrossNetV2(D, num_cross_layers, low_rank)
        mlp = lambda units: MLP_Block(D, units, hidden_activations, dropout_rates=net_dropout)
        if model_structure == "parallel":
            self.dnn, out_dim = mlp(parallel_dnn_hidden_units), D + parallel_dnn_hidden_units[-1]
        elif model_structure == "stacked":
            self.dnn, out_dim = mlp(stacked_dnn_hidden_units), stacked_dnn_hidden_units[-1]
        else:
            self.dnn, out_dim = None, D
        self.fc = nn.Linear(out_dim, 1)
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.model_to_device()

    def forward(self, inputs):
        x0 = self.feature_arch(self.get_inputs(inputs)).flatten(1)
        cross = self.cross_net(x0)
        if self.structure == "parallel":
            out = torch.cat([cross, self.dnn(x0)], dim=-1)
        elif self.structure == "stacked":
            out = self.dnn(cross)
        else:
            out = cross
        return {"y_pred": self.output_activation(self.fc(out))}
