"""TransAct (Xia et al. 2023) as a FuxiCTR 2.0 model: a Transformer over the action sequence.

    q = [E(t) for t in targets]                        # [B, d_q]: the candidate item
    A = [E(s) for s in sequences] ‖ q                  # [B, T, w]: early concat fusion of the target
    H = TransformerEncoder(A, key_padding_mask)        # [B, T, w]
    u = [newest_k(H) ; max_pool(H)]                    # [B, (k+1) w]: newest-k outputs and max-pooling
    x0 = [flatten(Z without the sequences) ‖ u]        # Z = PooledFeatureArch(inputs)
    y = sigmoid(DCNv2Net(x0))

The reference implementation assumes left padding; here the newest-k tokens and the pools
come from the validity mask (id != 0), so ``padding: pre`` and ``padding: post`` give the
same predictions. As in the paper, no positional encoding is added (the newest-k slots carry
recency). The training-time random time-window mask is not built.
"""
import torch
from torch import nn

from ..arches import PooledFeatureArch, resolve_fields
from ..layers import DCNv2Net, recent_tokens
from ..registry import register
from .base import CTRModel


@register
class TransAct(CTRModel):
    """TransAct baseline; constructor keywords mirror the YAML keys."""

    def __init__(self, feature_map, model_id="TransAct", gpu=-1, learning_rate=1e-3, embedding_dim=16,
                 embedding_initializer="partial(nn.init.normal_, std=0.05)", transact_target_field=None,
                 transact_sequence_field=None, num_transformer_layers=2, num_heads=1, transformer_ffn_dim=32,
                 num_recent_tokens=10, attention_dropout=0.0, model_structure="parallel", num_cross_layers=3,
                 low_rank=32, parallel_dnn_hidden_units=[512, 512], stacked_dnn_hidden_units=[500, 500],
                 bottom_hidden_units=[64], hidden_activations="ReLU", net_dropout=0.0,
                 embedding_regularizer=None, net_regularizer=None, **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, embedding_regularizer=embedding_regularizer,
                         net_regularizer=net_regularizer, **kwargs)
        self.targets, self.sequences = resolve_fields(feature_map, transact_target_field, transact_sequence_field)
        width = embedding_dim * (len(self.targets) + len(self.sequences))
        if width % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the action token width {width} "
                             f"(embedding_dim x {len(self.targets) + len(self.sequences)} fields)")
        self.num_recent_tokens = num_recent_tokens
        self.feature_arch = PooledFeatureArch(feature_map, embedding_dim, bottom_hidden_units,
                                              hidden_activations, embedding_initializer)
        layer = nn.TransformerEncoderLayer(width, num_heads, transformer_ffn_dim, attention_dropout,
                                           batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_transformer_layers, enable_nested_tensor=False)
        other_tokens = self.feature_arch.num_tokens - len(self.sequences)
        self.dcn = DCNv2Net(other_tokens * embedding_dim + (num_recent_tokens + 1) * width, model_structure,
                            num_cross_layers, low_rank, parallel_dnn_hidden_units, stacked_dnn_hidden_units,
                            hidden_activations, net_dropout)
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.model_to_device()

    def transact(self, X):
        """The TransAct module: ``[B, (k+1) w]`` summary of the action sequence."""
        arch = self.feature_arch
        query = torch.cat([arch.embed(f, X[f]) for f in self.targets], dim=-1)     # [B, d_q]
        actions = torch.cat([arch.embed(f, X[f]) for f in self.sequences], dim=-1)  # [B, T, d_s]
        mask = X[self.sequences[0]] != 0                                            # [B, T]
        A = torch.cat([actions, query.unsqueeze(1).expand(-1, actions.size(1), -1)], dim=-1)
        # An empty history would make every key masked (NaN); let it attend anywhere, its
        # outputs are all dropped by the masked pools below.
        empty = ~mask.any(-1, keepdim=True)
        H = self.transformer(A, src_key_padding_mask=~(mask | empty))               # [B, T, w]
        recent, _ = recent_tokens(H, mask, self.num_recent_tokens)                  # [B, k, w]
        pooled = H.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
        pooled = pooled.masked_fill(empty, 0.0)                                     # [B, w]
        return torch.cat([recent.flatten(1), pooled], dim=-1)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        others = self.feature_arch(X, skip=self.sequences).flatten(1)
        x0 = torch.cat([others, self.transact(X)], dim=-1)
        return {"y_pred": self.output_activation(self.dcn(x0))}
