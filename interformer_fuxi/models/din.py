"""DIN (Zhou et al. 2018) as a FuxiCTR 2.0 model: target attention over the history.

    Z = PooledFeatureArch(inputs)                       # [B, m, d]
    for (targets, sequences) in groups:                 # e.g. ([item_id, cate_id], [item_history, cate_history])
        q = [E(t) for t in targets]                     # [B, g*d]
        H = [E(s) for s in sequences]                   # [B, T, g*d]
        a = DIN_Attention(q, H, mask)                   # [B, g*d]: sum of MLP(q, h, q-h, q*h) * h
        Z[sequences] = split(a)                         # the attention summary replaces the pooled token
    y = sigmoid(DNN(flatten(Z)))

Keys as FuxiCTR's DIN (``din_target_field``, ``din_sequence_field``, ``attention_*``,
``dnn_*``), so BARS's DIN configs run unchanged, and FuxiCTR 2.0.4's computation: ``batch_norm``
applies to the DNN only (not to the attention MLP) and every ``Linear`` starts from
``xavier_normal_`` with zero bias (FuxiCTR's ``reset_parameters``). Padded positions (id 0) get
zero weight, whichever side they are on; an empty history gives a zero summary.
"""
import torch
from fuxictr.pytorch.layers import MLP_Block
from fuxictr.pytorch.layers.attentions import DIN_Attention
from torch import nn

from ..arches import PooledFeatureArch, resolve_groups
from ..registry import register
from .base import CTRModel


@register
class DIN(CTRModel):
    """DIN baseline; constructor keywords mirror the YAML keys (FuxiCTR's DIN names)."""
    # 2: FuxiCTR's DIN exactly (revision 1 had batch norm in the attention MLP and PyTorch's
    # default Linear init); benchmarks/evidence.py keys its cached runs by it
    revision = 2

    def __init__(self, feature_map, model_id="DIN", gpu=-1, learning_rate=1e-3, embedding_dim=16,
                 embedding_initializer="partial(nn.init.normal_, std=0.05)", din_target_field=None,
                 din_sequence_field=None, din_use_softmax=False, attention_hidden_units=[64],
                 attention_hidden_activations="Dice", attention_output_activation=None, attention_dropout=0.0,
                 dnn_hidden_units=[512, 128, 64], dnn_activations="ReLU", bottom_hidden_units=[],
                 net_dropout=0.0, batch_norm=False, embedding_regularizer=None, net_regularizer=None, **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, embedding_regularizer=embedding_regularizer,
                         net_regularizer=net_regularizer, **kwargs)
        self.groups = resolve_groups(feature_map, din_target_field, din_sequence_field, key="din")
        self.feature_arch = PooledFeatureArch(feature_map, embedding_dim, bottom_hidden_units,
                                              dnn_activations, embedding_initializer)
        self.attention = nn.ModuleList(
            DIN_Attention(embedding_dim * len(targets), attention_hidden_units, attention_hidden_activations,
                          attention_output_activation, attention_dropout, batch_norm=False,
                          use_softmax=din_use_softmax)
            for targets, _ in self.groups)
        self.dnn = MLP_Block(self.feature_arch.num_tokens * embedding_dim, dnn_hidden_units, dnn_activations,
                             output_dim=1, dropout_rates=net_dropout, batch_norm=batch_norm)
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def target_attention(self, X):
        """``{sequence field: [B, d]}`` attention summaries, one per grouped sequence field."""
        arch, summaries = self.feature_arch, {}
        for attention, (targets, sequences) in zip(self.attention, self.groups):
            query = torch.cat([arch.embed(f, X[f]) for f in targets], dim=-1)      # [B, g*d]
            history = torch.cat([arch.embed(f, X[f]) for f in sequences], dim=-1)  # [B, T, g*d]
            mask = X[sequences[0]] != 0                                            # [B, T]
            pooled = attention(query, history, mask) * mask.any(-1, keepdim=True)
            summaries.update(zip(sequences, pooled.chunk(len(sequences), dim=-1)))
        return summaries

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        Z = self.feature_arch(X, replace=self.target_attention(X))
        return {"y_pred": self.output_activation(self.dnn(Z.flatten(1)))}
