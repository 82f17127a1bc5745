"""DCNv2's cross network (Wang et al. 2021): explicit feature crosses of bounded degree."""
from typing import Optional

import torch
from torch import nn


class CrossNetV2(nn.Module):
    r"""``x_{l+1} = x0 * (W_l x_l + b_l) + x_l`` for ``num_layers`` layers.

    ``W_l`` is full rank (``low_rank`` None or 0) or the low-rank product ``U_l V_l`` with
    ``V_l: D -> r`` and ``U_l: r -> D`` (bias in ``U_l``).

    Args:
        input_dim (int): ``D``.
        num_layers (int): cross layers.
        low_rank (int | None): rank ``r``; None or 0 for full-rank ``W_l``.

    Shapes:
        x0: ``[B, D]`` -> ``[B, D]``.

    Example::

        >>> CrossNetV2(input_dim=12, num_layers=2, low_rank=4)(torch.randn(3, 12)).shape
        torch.Size([3, 12])
    """

    def __init__(self, input_dim: int, num_layers: int = 2, low_rank: Optional[int] = 32) -> None:
        super().__init__()
        self.low_rank = low_rank or None
        if self.low_rank:
            self.V = nn.ModuleList(nn.Linear(input_dim, self.low_rank, bias=False) for _ in range(num_layers))
            self.U = nn.ModuleList(nn.Linear(self.low_rank, input_dim) for _ in range(num_layers))
        else:
            self.W = nn.ModuleList(nn.Linear(input_dim, input_dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        weights = zip(self.V, self.U) if self.low_rank else ((W, nn.Identity()) for W in self.W)
        for first, second in weights:
            x = x0 * second(first(x)) + x
        return x
