"""DHEN (Zhang et al. 2022): an ensemble of DOT and DCN with a shortcut and LayerNorm (SPEC §3)."""
import torch
from torch import nn

from .dcn_interaction import DCNv2Interaction
from .dot_interaction import DotInteraction
from .token_lce import LCE

DHEN_ENSEMBLES = ("sum", "softmax")


class DHENLayer(nn.Module):
    r"""``Y = LayerNorm( ensemble(DOT(Z), DCN(Z)) + ShortCut(Z) )``.

    ``ensemble="sum"`` adds the two modules; ``"softmax"`` weights them by a softmax over
    two learned logits (initialised equal). ``ShortCut`` is the identity when
    ``n_in == n_out``, else a linear map over tokens (``einsum`` with ``W [n_in, n_out]``).
    LayerNorm normalises each token over ``d``.

    Args:
        num_inputs (int): ``n_in``.
        embedding_dim (int): ``d``.
        num_outputs (int): ``n_out``.
        ensemble (str): "sum" or "softmax".
        low_rank (int): DCN rank.
        num_cross_layers (int): DCN cross layers.

    Shapes:
        Z: ``[B, n_in, d]`` -> ``[B, n_out, d]``.

    Example::

        >>> layer = DHENLayer(num_inputs=6, embedding_dim=8, num_outputs=4, low_rank=4)
        >>> layer(torch.randn(2, 6, 8)).shape
        torch.Size([2, 4, 8])
    """

    def __init__(self, num_inputs: int, embedding_dim: int, num_outputs: int,
                 ensemble: str = "sum", low_rank: int = 32, num_cross_layers: int = 2) -> None:
        super().__init__()
        if ensemble not in DHEN_ENSEMBLES:
            raise ValueError(
                f"unknown DHEN ensemble {ensemble!r}; expected one of {DHEN_ENSEMBLES}"
            )
        self.ensemble = ensemble
        self.dot = DotInteraction(num_inputs, embedding_dim, num_outputs)
        self.dcn = DCNv2Interaction(num_inputs, embedding_dim, num_outputs,
                                    num_cross_layers=num_cross_layers, low_rank=low_rank)
        self.ensemble_logits = nn.Parameter(torch.zeros(2)) if ensemble == "softmax" else None
        self.shortcut = (nn.Identity() if num_inputs == num_outputs
                         else LCE(num_inputs, num_outputs, bias=False))
        self.norm = nn.LayerNorm(embedding_dim)

    def forward(self, Z: torch.Tensor) -> torch.Tensor:
        dot, dcn = self.dot(Z), self.dcn(Z)
        if self.ensemble_logits is not None:
            w = torch.softmax(self.ensemble_logits, dim=0)
            mixed = w[0] * dot + w[1] * dcn
        else:
            mixed = dot + dcn
        return self.norm(mixed + self.shortcut(Z))


class DHEN(nn.Module):
    r"""A stack of :class:`DHENLayer`s: the first maps ``n_in -> n_out``, the rest
    ``n_out -> n_out``.

    Args:
        num_inputs (int): ``n_in``.
        embedding_dim (int): ``d``.
        num_outputs (int): ``n_out``.
        num_layers (int): stacked layers (>= 1).
        ensemble (str): "sum" or "softmax".
        low_rank (int): DCN rank.
        num_cross_layers (int): DCN cross layers per layer.

    Shapes:
        Z: ``[B, n_in, d]`` -> ``[B, n_out, d]``.

    Example::

        >>> dhen = DHEN(num_inputs=6, embedding_dim=8, num_outputs=4, num_layers=2, low_rank=4)
        >>> dhen(torch.randn(2, 6, 8)).shape
        torch.Size([2, 4, 8])
    """

    def __init__(self, num_inputs: int, embedding_dim: int, num_outputs: int, num_layers: int = 1,
                 ensemble: str = "sum", low_rank: int = 32, num_cross_layers: int = 2) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"DHEN needs num_layers >= 1, got {num_layers}")
        self.layers = nn.ModuleList(
            DHENLayer(num_inputs if i == 0 else num_outputs, embedding_dim, num_outputs,
                      ensemble=ensemble, low_rank=low_rank, num_cross_layers=num_cross_layers)
            for i in range(num_layers)
        )

    def forward(self, Z: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            Z = layer(Z)
        return Z
