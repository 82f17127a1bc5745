"""Feature tokens for the non-sequential baselines: every sequence mean-pooled to one token."""
import torch
from fuxictr.pytorch.layers import FeatureEmbeddingDict, MLP_Block
from torch import nn

from .feature_arch import width_projections


class PooledFeatureArch(nn.Module):
    r"""FuxiCTR features -> ``[B, m, d]`` tokens, DLRM style.

    - all numeric features -> one vector -> bottom MLP -> ONE dense token;
    - each categorical feature -> its embedding token (a table of another width, e.g. a
      frozen pretrained one, is projected to ``d``);
    - each sequence field -> masked mean of its valid positions (mask from the ids, padding
      id 0, so the padding side does not matter; an empty history gives a zero token).

    Args:
        feature_map: FuxiCTR ``FeatureMap``.
        embedding_dim (int): ``d``.
        bottom_hidden_units (list): hidden layers of the dense bottom MLP.
        hidden_activations (str): activation of the bottom MLP.
        embedding_initializer (str): FuxiCTR initializer expression for the tables.

    Shapes:
        inputs ``{feature: [B] or [B, T]}`` -> ``[B, m, d]`` with ``m = [dense] + sparse + sequences``.

    Sequence models pass their own summary of a sequence field in ``replace`` (a ``[B, d]``
    token in that field's slot), or leave fields out with ``skip``; ``embed`` gives the
    unpooled ``[B, T, d]`` tokens they summarise.

    Example::

        >>> arch = PooledFeatureArch(feature_map, embedding_dim=16)   # tiny_amazon feature map
        >>> arch(model.get_inputs(batch)).shape
        torch.Size([128, 4, 16])
    """

    def __init__(self, feature_map, embedding_dim, bottom_hidden_units=(), hidden_activations="ReLU",
                 embedding_initializer="partial(nn.init.normal_, std=0.05)"):
        super().__init__()
        features = feature_map.features
        self.dense_fields = [f for f, s in features.items() if s["type"] == "numeric"]
        self.token_fields = [f for f, s in features.items() if s["type"] in ("categorical", "sequence")]
        self.sequence_fields = {f for f, s in features.items() if s["type"] == "sequence"}
        self.embedding_layer = FeatureEmbeddingDict(
            feature_map, embedding_dim, embedding_initializer=embedding_initializer,
            not_required_feature_columns=self.dense_fields)
        for field in self.sequence_fields:  # pooled here, with the mask from the ids
            if field in self.embedding_layer.feature_encoders:
                del self.embedding_layer.feature_encoders[field]
        self.dense_token = (MLP_Block(len(self.dense_fields), list(bottom_hidden_units), hidden_activations,
                                      output_dim=embedding_dim) if self.dense_fields else None)
        self.projections = width_projections(self.embedding_layer, self.token_fields, embedding_dim)
        self.num_tokens = len(self.token_fields) + (1 if self.dense_fields else 0)
        if self.num_tokens == 0:
            raise ValueError("the dataset config has no feature to embed")

    def embed(self, field, ids):
        """``[B]`` or ``[B, T]`` ids -> ``[B, d]`` or ``[B, T, d]`` tokens of width ``d``, unpooled."""
        emb = self.embedding_layer.embedding_layers[field](ids.long())
        return self.projections[field](emb) if field in self.projections else emb

    def _token(self, field, ids):
        emb = self.embed(field, ids)
        if field in self.sequence_fields:
            mask = (ids != 0).unsqueeze(-1).to(emb.dtype)
            emb = (emb * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return emb

    def forward(self, inputs, replace=None, skip=()):
        """``replace``: ``{field: [B, d]}`` tokens used instead of the field's own; ``skip``: fields left out."""
        replace = replace or {}
        tokens = [replace[f] if f in replace else self._token(f, inputs[f])
                  for f in self.token_fields if f not in skip]
        if self.dense_token is not None:
            dense = torch.stack([inputs[f].float() for f in self.dense_fields], dim=-1)
            tokens.insert(0, self.dense_token(dense))
        return torch.stack(tokens, dim=1)
