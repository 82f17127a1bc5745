"""DIN's ``q ⊙ k`` on the raw embedding tables, added to the merged history (not in the paper).

``history_match`` matches the *merged* history tokens (MaskNet, LayerNorm) against the
non-sequence tokens: two spaces that agree only after training. DIN compares the raw
embeddings of one table: the target item's row and each history item's row. This layer
does that for every sequence field that shares its table with a non-sequence field
(FuxiCTR's ``share_embedding``): the element-wise product of the two unit vectors, times
``d`` (so a match is O(1) whatever the table's scale, which FuxiCTR's whole-table L2 keeps
shrinking), mapped by a zero-initialised ``Linear`` onto the history token. The model
starts as the paper's.
"""
import torch
from torch import nn
from torch.nn import functional as F


class TargetMatch(nn.Module):
    """``S + Σ_f d·(ĥ_f ⊙ t̂_f) W_f`` per history position, over the ``m`` shared-table pairs.

    Args:
        num_pairs (int): ``m``, sequence fields whose table a non-sequence field shares.
        embedding_dim (int): ``d``.

    Shapes:
        S ``[B, T, d]``, history ``[B, T, m, d]``, target ``[B, m, d]`` -> ``[B, T, d]``.

    Example::

        >>> match = TargetMatch(num_pairs=2, embedding_dim=16)
        >>> match(torch.randn(8, 30, 16), torch.randn(8, 30, 2, 16), torch.randn(8, 2, 16)).shape
        torch.Size([8, 30, 16])
    """

    def __init__(self, num_pairs, embedding_dim):
        super().__init__()
        if num_pairs < 1:
            raise ValueError("target_match needs a sequence field that shares its embedding table "
                             "with a non-sequence field (share_embedding in the dataset config)")
        self.embedding_dim = embedding_dim
        self.weight = nn.Parameter(torch.zeros(num_pairs * embedding_dim, embedding_dim))

    def forward(self, S, history, target):
        match = F.normalize(history, dim=-1) * F.normalize(target, dim=-1).unsqueeze(1)  # [B, T, m, d]
        return S + torch.matmul(match.flatten(2) * self.embedding_dim, self.weight)
