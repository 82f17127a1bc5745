"""DCNv2 (Wang et al. 2021) as a FuxiCTR 2.0 model: cross network and deep network.

    x0 = flatten(PooledFeatureArch(inputs))                 # [B, m*d]
    y = sigmoid(DCNv2Net(x0))                               # parallel | stacked | crossnet_only

The cross layers are full rank (``low_rank: 0``) or low rank (``U V``, rank ``low_rank``);
the mixture-of-low-rank-experts variant (DCN-Mix) is not built.
"""
from ..arches import PooledFeatureArch
from ..layers import DCNv2Net
from ..registry import register
from .base import CTRModel


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
        self.feature_arch = PooledFeatureArch(feature_map, embedding_dim, bottom_hidden_units,
                                              hidden_activations, embedding_initializer)
        self.dcn = DCNv2Net(self.feature_arch.num_tokens * embedding_dim, model_structure, num_cross_layers,
                            low_rank, parallel_dnn_hidden_units, stacked_dnn_hidden_units, hidden_activations,
                            net_dropout)
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.model_to_device()

    def forward(self, inputs):
        x0 = self.feature_arch(self.get_inputs(inputs)).flatten(1)
        return {"y_pred": self.output_activation(self.dcn(x0))}
