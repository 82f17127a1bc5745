"""Wukong layer (Zhang et al. 2024): a factorization-machine block beside a linear compression block."""
import torch
from torch import nn

from .activation import activation
from .token_lce import LCE


class WukongLayer(nn.Module):
    r"""``Y = LayerNorm([FMB(X) ‖ LCB(X)] + ShortCut(X))`` on embedding tokens.

    - FMB (factorization machine block): the optimised FM ``X Xᵀ (X W_proj)`` compares all
      tokens with ``k`` learned mixtures of them (``[B, n, k]``), flattened, then an MLP
      makes ``n_F`` new tokens;
    - LCB (linear compression block): a linear map over the token axis, ``n -> n_L``;
    - ShortCut: identity when ``n == n_F + n_L``, else a linear map over tokens.

    Args:
        num_inputs (int): ``n``.
        embedding_dim (int): ``d``.
        num_fmb_tokens (int): ``n_F``.
        num_lcb_tokens (int): ``n_L``.
        fm_rank (int): ``k``, columns of the FM projection.
        hidden_units (int): width of the FMB's MLP.
        hidden_activations (str), dropout (float).

    Shapes:
        X ``[B, n, d]`` -> ``[B, n_F + n_L, d]``.

    Example::

        >>> WukongLayer(5, 8, num_fmb_tokens=4, num_lcb_tokens=4)(torch.randn(2, 5, 8)).shape
        torch.Size([2, 8, 8])
    """

    def __init__(self, num_inputs, embedding_dim, num_fmb_tokens, num_lcb_tokens, fm_rank=8,
                 hidden_units=128, hidden_activations="ReLU", dropout=0.0):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.num_fmb_tokens = num_fmb_tokens
        self.fm_projection = LCE(num_inputs, fm_rank, bias=False)
        self.fmb_mlp = nn.Sequential(
            nn.LayerNorm(num_inputs * fm_rank), nn.Linear(num_inputs * fm_rank, hidden_units),
            activation(hidden_activations), nn.Dropout(dropout),
            nn.Linear(hidden_units, num_fmb_tokens * embedding_dim))
        self.lcb = LCE(num_inputs, num_lcb_tokens, bias=False)
        num_outputs = num_fmb_tokens + num_lcb_tokens
        self.shortcut = nn.Identity() if num_inputs == num_outputs else LCE(num_inputs, num_outputs, bias=False)
        self.norm = nn.LayerNorm(embedding_dim)

    def forward(self, X):
        fm = torch.bmm(X, self.fm_projection(X).transpose(1, 2))  # [B, n, k]
        fmb = self.fmb_mlp(fm.flatten(1)).view(-1, self.num_fmb_tokens, self.embedding_dim)
        return self.norm(torch.cat([fmb, self.lcb(X)], dim=1) + self.shortcut(X))
