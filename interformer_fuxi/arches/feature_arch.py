"""Preprocessing (SPEC §1, Eqs. 5-6): FuxiCTR features -> non-sequence tokens and one sequence."""
import logging
import math

import torch
from fuxictr.pytorch.layers import FeatureEmbeddingDict
from torch import nn

from ..layers import MaskNetMerge
from ..layers.capture import capturing_graph


def width_projections(embedding_layer, fields, embedding_dim):
    """``Linear`` maps to ``d`` for the fields whose table has another width or is frozen
    (pretrained embeddings, SPEC §1: a frozen table of width ``d`` still needs a trainable
    map into the model's token space), keyed by field."""
    tables = embedding_layer.embedding_layers
    return nn.ModuleDict({f: nn.Linear(tables[f].embedding_dim, embedding_dim, bias=False)
                          for f in fields
                          if tables[f].embedding_dim != embedding_dim or not tables[f].weight.requires_grad})


class FeatureArch(nn.Module):
    r"""Turns a FuxiCTR batch dict into ``X`` (non-sequence tokens), ``S`` and its mask.

    - all numeric features -> one vector -> ``BatchNorm1d`` -> ``Linear`` -> ONE dense token;
    - each categorical feature -> its embedding token; a frozen pretrained embedding of
      another width is projected to ``d`` by a ``Linear``;
    - the ``k`` sequence fields (``type: sequence``, each sharing its target field's table
      through FuxiCTR's ``share_embedding``) -> ``[B, T, k*d]`` -> MaskNet merge -> ``[B, T, d]``.
    The valid-position mask comes from the ids (padding id 0): a position is valid when
    any sequence field has a non-padding id there. Sequence fields are never pooled here,
    even if the feature map still names a pooling ``feature_encoder``.

    A merged token depends on its position's ids alone. So on the CPU, with
    ``dedup_sequence_tokens``, the embedding, merge and LayerNorm run once per distinct id tuple
    of the batch, and the results are gathered back to the ``B x T`` positions. Padding and
    popular items repeat a lot in real batches. When over 80% of the tuples are distinct, the
    gather costs more than it saves, and every position is computed. The result is the same
    up to float rounding.
    On CUDA, where the distinct count would cost a host sync per step, and under
    ``torch.compile``, every position is computed.

    Args:
        feature_map: FuxiCTR ``FeatureMap``.
        embedding_dim (int): ``d``.
        hidden_activations (str): activation of the MaskNet merge.
        embedding_initializer (str): FuxiCTR initializer expression for the tables.
        token_norm (bool): LayerNorm on the tokens of X and S.
        dedup_sequence_tokens (bool): merge each distinct id tuple once (CPU).
        merge_bias (bool): the bias of the MaskNet merge's output layer.

    Shapes:
        inputs: ``{feature: [B] or [B, T]}`` -> X ``[B, n, d]``, S ``[B, T, d]``, mask ``[B, T]`` bool.

    Example::

        >>> arch = FeatureArch(feature_map, embedding_dim=16)   # tiny_amazon feature map
        >>> X, S, mask = arch(model.get_inputs(batch))
        >>> X.shape, S.shape, mask.shape
        (torch.Size([128, 2, 16]), torch.Size([128, 30, 16]), torch.Size([128, 30]))
    """

    def __init__(self, feature_map, embedding_dim, hidden_activations="SiLU",
                 embedding_initializer="partial(nn.init.normal_, std=0.05)", token_norm=True,
                 dedup_sequence_tokens=True, merge_bias=True):
        super().__init__()
        features = feature_map.features
        self.dense_fields = [f for f, s in features.items() if s["type"] == "numeric"]
        self.sparse_fields = [f for f, s in features.items() if s["type"] == "categorical"]
        self.sequence_fields = [f for f, s in features.items() if s["type"] == "sequence"]
        if not self.sequence_fields:
            raise ValueError("InterFormer needs at least one sequence feature (type: sequence) "
                             "in the dataset config")
        if not any(s["type"] in ("numeric", "categorical") for s in features.values()):
            raise ValueError("InterFormer needs at least one non-sequence feature "
                             "(type: categorical or numeric) in the dataset config")
        lengths = {features[f]["max_len"] for f in self.sequence_fields}
        if len(lengths) != 1:
            raise ValueError("InterFormer merges aligned sequences: all sequence features need one "
                             f"max_len, got {dict((f, features[f]['max_len']) for f in self.sequence_fields)}")
        self.embedding_layer = FeatureEmbeddingDict(
            feature_map, embedding_dim, embedding_initializer=embedding_initializer,
            not_required_feature_columns=self.dense_fields)
        for field in self.sequence_fields:  # keep per-position embeddings
            if field in self.embedding_layer.feature_encoders:
                logging.info("InterFormer reads %s per position: ignoring its feature_encoder", field)
                del self.embedding_layer.feature_encoders[field]
        # raw numeric columns (BARS's Taobao price spans 0.01..1e5): a BatchNorm standardises
        # them first, else the token's LayerNorm would erase their magnitude
        self.dense_norm = nn.BatchNorm1d(len(self.dense_fields)) if self.dense_fields else None
        self.dense_token = nn.Linear(len(self.dense_fields), embedding_dim) if self.dense_fields else None
        self.projections = width_projections(self.embedding_layer, self.sparse_fields + self.sequence_fields,
                                             embedding_dim)
        self.sequence_merge = MaskNetMerge(len(self.sequence_fields), embedding_dim, hidden_activations,
                                           merge_bias)
        self.x_norm = nn.LayerNorm(embedding_dim) if token_norm else nn.Identity()
        self.s_norm = nn.LayerNorm(embedding_dim) if token_norm else nn.Identity()
        self.num_tokens = len(self.sparse_fields) + (1 if self.dense_fields else 0)
        # (sequence field's index, non-sequence field) sharing one table: what target_match compares
        tables = self.embedding_layer.embedding_layers
        self.match_pairs = [(i, t) for i, f in enumerate(self.sequence_fields)
                            for t in self.sparse_fields if tables[f] is tables[t]]
        self.max_len = lengths.pop()
        # mixed-radix key of a position's id tuple, when the tables' sizes let it fit in int64
        radix = [self.embedding_layer.embedding_layers[f].num_embeddings for f in self.sequence_fields]
        fits = math.prod(radix) < 2 ** 63
        self.dedup_radix = radix if dedup_sequence_tokens and fits else None

    def _embed(self, field, ids):
        emb = self.embedding_layer.embedding_layers[field](ids.long())
        return self.projections[field](emb) if field in self.projections else emb

    def forward(self, inputs):
        X, ids, mask = self.tokens(inputs)
        return X, self.merge_sequence(ids), mask

    def tokens(self, inputs):
        """X ``[B, n, d]``, the sequence ids ``[B, T, k]`` (still to merge) and the mask ``[B, T]``."""
        tokens = [self._embed(f, inputs[f]) for f in self.sparse_fields]
        if self.dense_token is not None:  # its BatchNorm sees the whole batch
            dense = torch.stack([inputs[f].float() for f in self.dense_fields], dim=-1)
            tokens.insert(0, self.dense_token(self.dense_norm(dense)))
        X = torch.stack(tokens, dim=1)
        ids = torch.stack([inputs[f] for f in self.sequence_fields], dim=-1).long()  # [B, T, k]
        return self.x_norm(X), ids, (ids != 0).any(dim=-1)

    def match_targets(self, inputs):
        """The raw embeddings ``[B, m, d]`` of the ``match_pairs``' non-sequence fields."""
        return torch.stack([self._embed(t, inputs[t]) for _, t in self.match_pairs], dim=1)

    def match_history(self, ids):
        """``ids [B, T, k]`` -> the raw embeddings ``[B, T, m, d]`` of the ``match_pairs``' sequence fields."""
        return torch.stack([self._embed(self.sequence_fields[i], ids[..., i]) for i, _ in self.match_pairs],
                           dim=-2)

    def merge_sequence(self, ids):
        """``ids [B, T, k]`` -> LayerNorm(MaskNet merge of the k embeddings) ``[B, T, d]``."""
        if self.dedup_radix is None or ids.device.type != "cpu" or capturing_graph():
            return self._merge(ids)
        key = ids[..., 0]
        for i, size in enumerate(self.dedup_radix[1:], 1):
            key = key * size + ids[..., i]
        distinct, where = torch.unique(key, return_inverse=True)  # [U], [B, T]
        if distinct.numel() > 0.8 * key.numel():  # too few repeats to pay for the gather
            return self._merge(ids)
        # each distinct key's ids, read off any of its positions (they all hold the same tuple)
        flat = ids.reshape(-1, ids.shape[-1])
        distinct_ids = flat.new_empty(distinct.numel(), flat.shape[1]).index_copy_(0, where.reshape(-1), flat)
        # index_select, not indexing: its backward is a parallel index_add (a third of the time)
        merged = self._merge(distinct_ids)
        return merged.index_select(0, where.reshape(-1)).view(*where.shape, merged.shape[-1])

    def _merge(self, ids):
        """``ids [..., k]`` -> ``[..., d]``, position by position."""
        S = torch.cat([self._embed(f, ids[..., i]) for i, f in enumerate(self.sequence_fields)], dim=-1)
        return self.s_norm(self.sequence_merge(S))
