"""Explicit match features between the history and the non-sequence tokens (not in the paper).

DIN's attention MLP is given ``q ⊙ k``, so it can match the target against each history
item from its first step. In InterFormer a match is the product of two learned projections
(the CLS query from ``X_sum``, the history keys) and is found only after a plateau
(``benchmarks/target_route.py``). This layer adds to each history token a learned map of
its scaled dot products with the ``n`` non-sequence tokens (the target item's embedding,
which shares its table with the history, among them). The map starts at zero, so a model
with it starts as the paper's.
"""
import math

import torch
from torch import nn


class HistoryMatch(nn.Module):
    """``S + (S Xᵀ / √d) W``, per token.

    Args:
        num_tokens (int): ``n``, the non-sequence tokens.
        embedding_dim (int): ``d``.

    Shapes:
        X ``[B, n, d]``, S ``[B, T, d]`` -> ``[B, T, d]``.

    Example::

        >>> match = HistoryMatch(num_tokens=5, embedding_dim=16)
        >>> match(torch.randn(8, 5, 16), torch.randn(8, 30, 16)).shape
        torch.Size([8, 30, 16])
    """

    def __init__(self, num_tokens, embedding_dim):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_tokens, embedding_dim))
        self.scale = 1.0 / math.sqrt(embedding_dim)

    def forward(self, X, S):
        scores = torch.matmul(S, X.transpose(1, 2)) * self.scale  # [B, T, n]
        return S + torch.matmul(scores, self.weight)
