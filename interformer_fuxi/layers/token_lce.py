"""Linear Compressed Embedding over the token axis (LCE, Eq. 10)."""
import math

import torch
from torch import nn


class LCE(nn.Module):
    r"""A learned linear map over tokens: ``Y[:, j] = sum_i W[i, j] X[:, i] (+ b[j])``.

    Compresses (or expands) ``n`` tokens into ``n_out`` tokens, each a learned linear
    combination of the inputs; the embedding axis is untouched. ``W`` is drawn from
    ``U(-sqrt(3/n), sqrt(3/n))`` (variance ``1/n``) so outputs keep the inputs' scale.

    Args:
        num_inputs (int): ``n``.
        num_outputs (int): ``n_out``; 0 gives ``[B, 0, d]``.
        bias (bool): add a learned per-output-token bias ``[n_out, 1]`` (shared over d).

    Shapes:
        X: ``[B, n, d]`` -> ``[B, n_out, d]``.

    Example::

        >>> lce = LCE(num_inputs=5, num_outputs=2)
        >>> lce(torch.randn(4, 5, 8)).shape
        torch.Size([4, 2, 8])
    """

    def __init__(self, num_inputs: int, num_outputs: int, bias: bool = True) -> None:
        super().__init__()
        if num_inputs < 1 or num_outputs < 0:
            raise ValueError(
                f"need num_inputs >= 1 and num_outputs >= 0, got {num_inputs}, {num_outputs}"
            )
        self.num_inputs = num_inputs
        self.num_outputs = num_outputs
        bound = math.sqrt(3.0 / num_inputs)
        self.weight = nn.Parameter(torch.empty(num_inputs, num_outputs).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(num_outputs, 1)) if bias else None

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        Y = torch.einsum("bnd,nm->bmd", X, self.weight)
        if self.bias is not None:
            Y = Y + self.bias
        return Y

    def extra_repr(self) -> str:
        return (f"num_inputs={self.num_inputs}, num_outputs={self.num_outputs}, "
                f"bias={self.bias is not None}")
