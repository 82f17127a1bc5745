"""MaskNet merge of the k aligned sequence fields into one token per position (SPEC §1)."""
from typing import Union

import torch
from torch import nn

from .activation import activation


class MaskNetMerge(nn.Module):
    r"""Merges ``k`` sequence fields embedded side by side into one ``d``-dim token (Eq. 6).

    ``S1 = MLP_lce(S * MLP_mask(S))``: ``MLP_mask`` (``kd -> kd -> kd``) computes a
    self-mask that re-weights every field dimension from all fields at that position;
    ``MLP_lce`` (one ``Linear(kd, d)``) compresses the result. Works position-wise, so
    padded positions stay wherever they were (their mask lives upstream).

    Args:
        num_sequences (int): ``k``, number of sequence fields concatenated on the last axis.
        embedding_dim (int): ``d``, embedding size of each field.
        hidden_activations (str | nn.Module): activation inside ``MLP_mask``
            ("SiLU", "ReLU", "GELU", "tanh", "sigmoid", "identity"; case-insensitive).
        lce_bias (bool): a bias in ``MLP_lce`` (the paper does not say). With small
            embeddings it dominates every merged token at first, so that all items look
            alike after the LayerNorm that follows (docs/design.md, the target's route).

    Shapes:
        S: ``[B, T, k*d]`` -> ``[B, T, d]``.

    Example::

        >>> merge = MaskNetMerge(num_sequences=2, embedding_dim=8)
        >>> merge(torch.randn(4, 10, 16)).shape
        torch.Size([4, 10, 8])
    """

    def __init__(self, num_sequences: int, embedding_dim: int,
                 hidden_activations: Union[str, nn.Module] = "SiLU", lce_bias: bool = True) -> None:
        super().__init__()
        if num_sequences < 1:
            raise ValueError(f"num_sequences must be >= 1, got {num_sequences}")
        kd = num_sequences * embedding_dim
        self.num_sequences = num_sequences
        self.embedding_dim = embedding_dim
        self.mlp_mask = nn.Sequential(
            nn.Linear(kd, kd), activation(hidden_activations), nn.Linear(kd, kd)
        )
        self.mlp_lce = nn.Linear(kd, embedding_dim, bias=lce_bias)

    def forward(self, S: torch.Tensor) -> torch.Tensor:
        return self.mlp_lce(S * self.mlp_mask(S))
