"""Interaction Arch (SPEC §2.2, Eq. 7): behaviour-aware non-sequence learning."""
import torch
from torch import nn

from ..layers import activation, build_interaction


class InteractionArch(nn.Module):
    r"""``X(l+1) = MLP(Interaction([X(l) ‖ S_sum(l)]))``, mapped back to exactly ``n`` tokens.

    The interaction module (DOT, DCNv2 or DHEN) maps ``n + m`` tokens to ``n`` tokens; a
    per-token MLP follows. With ``residual_norm`` the output is ``LayerNorm(X + MLP(...))``
    so that stacked layers keep the input tokens (DOT alone would keep only their dot
    products), matching the residual decision of the Sequence Arch.

    Args:
        num_tokens (int): ``n``.
        num_summary_tokens (int): ``m``, tokens of ``S_sum`` appended (0 in ``n2s``/``sep``).
        embedding_dim (int): ``d``.
        interaction_arch (str): ``DOT``, ``DCNv2`` or ``DHEN``.
        dhen_layers (int), low_rank (int): interaction module settings.
        hidden_activations (str): activation of the MLP.
        net_dropout (float): dropout in the MLP.
        residual_norm (bool): residual connection and LayerNorm around the arch.

    Shapes:
        X ``[B, n, d]``, S_sum ``[B, m, d]`` or None -> ``[B, n, d]``.

    Example::

        >>> arch = InteractionArch(num_tokens=5, num_summary_tokens=8, embedding_dim=16)
        >>> arch(torch.randn(2, 5, 16), torch.randn(2, 8, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, num_tokens, num_summary_tokens, embedding_dim, interaction_arch="DHEN",
                 dhen_layers=1, low_rank=32, hidden_activations="SiLU", net_dropout=0.0,
                 residual_norm=True):
        super().__init__()
        self.interaction = build_interaction(interaction_arch, num_tokens + num_summary_tokens,
                                             embedding_dim, num_tokens, dhen_layers=dhen_layers,
                                             low_rank=low_rank)
        self.mlp = nn.Sequential(nn.Linear(embedding_dim, embedding_dim), activation(hidden_activations),
                                 nn.Dropout(net_dropout), nn.Linear(embedding_dim, embedding_dim))
        self.norm = nn.LayerNorm(embedding_dim) if residual_norm else None

    def forward(self, X, S_sum=None):
        Z = X if S_sum is None else torch.cat([X, S_sum], dim=1)
        out = self.mlp(self.interaction(Z))
        return self.norm(X + out) if self.norm is not None else out
