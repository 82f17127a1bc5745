"""Builds the pluggable interaction module of the Interaction Arch (Eq. 7) by name."""
from torch import nn

from .dcn_interaction import DCNv2Interaction
from .dhen import DHEN
from .dot_interaction import DotInteraction

INTERACTIONS = ("DOT", "DCNv2", "DHEN")


def build_interaction(name: str, num_inputs: int, embedding_dim: int, num_outputs: int,
                      dhen_layers: int = 1, low_rank: int = 32, num_cross_layers: int = 2,
                      dhen_ensemble: str = "sum") -> nn.Module:
    """Returns a module mapping ``[B, num_inputs, d] -> [B, num_outputs, d]``.

    Args:
        name (str): "DOT", "DCNv2" or "DHEN" (case-insensitive).
        num_inputs, embedding_dim, num_outputs (int): token counts and ``d``.
        dhen_layers (int): stacked DHEN layers.
        low_rank, num_cross_layers (int): DCN settings (DCNv2 and DHEN).
        dhen_ensemble (str): "sum" or "softmax" (DHEN).

    Example::

        >>> build_interaction("dhen", 6, 8, 4, low_rank=4)(torch.randn(2, 6, 8)).shape
        torch.Size([2, 4, 8])
    """
    key = str(name).lower()
    if key == "dot":
        return DotInteraction(num_inputs, embedding_dim, num_outputs)
    if key == "dcnv2":
        return DCNv2Interaction(num_inputs, embedding_dim, num_outputs,
                                num_cross_layers=num_cross_layers, low_rank=low_rank)
    if key == "dhen":
        return DHEN(num_inputs, embedding_dim, num_outputs, num_layers=dhen_layers,
                    ensemble=dhen_ensemble, low_rank=low_rank, num_cross_layers=num_cross_layers)
    raise ValueError(f"unknown interaction {name!r}; expected one of {INTERACTIONS}")
