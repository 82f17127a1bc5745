"""DCNv2 interaction: low-rank cross layers on the flattened tokens -> new tokens."""
import torch
from torch import nn

from .cross_net import CrossNetV2


class DCNv2Interaction(nn.Module):
    r"""Low-rank cross network (Wang et al. 2021) over ``x0 = flatten(Z)``.

    ``x_{l+1} = x0 * (U_l (V_l x_l) + b_l) + x_l`` for ``l < num_cross_layers``, then a
    Linear to ``n_out * d`` reshaped into tokens.

    Args:
        num_inputs (int): ``n_in`` tokens.
        embedding_dim (int): ``d``.
        num_outputs (int): ``n_out`` tokens.
        num_cross_layers (int): cross layers.
        low_rank (int): rank ``r`` of ``U_l V_l`` (``V_l: n_in d -> r``, ``U_l: r -> n_in d``).

    Shapes:
        Z: ``[B, n_in, d]`` -> ``[B, n_out, d]``.

    Example::

        >>> dcn = DCNv2Interaction(num_inputs=6, embedding_dim=8, num_outputs=3, low_rank=4)
        >>> dcn(torch.randn(4, 6, 8)).shape
        torch.Size([4, 3, 8])
    """

    def __init__(self, num_inputs: int, embedding_dim: int, num_outputs: int,
                 num_cross_layers: int = 2, low_rank: int = 32) -> None:
        super().__init__()
        D = num_inputs * embedding_dim
        self.num_inputs = num_inputs
        self.embedding_dim = embedding_dim
        self.num_outputs = num_outputs
        self.cross = CrossNetV2(D, num_cross_layers, low_rank)
        self.linear = nn.Linear(D, num_outputs * embedding_dim)

    def forward(self, Z: torch.Tensor) -> torch.Tensor:
        return self.linear(self.cross(Z.reshape(Z.shape[0], -1))).view(-1, self.num_outputs, self.embedding_dim)

    def extra_repr(self) -> str:
        return (f"num_inputs={self.num_inputs}, embedding_dim={self.embedding_dim}, "
                f"num_outputs={self.num_outputs}")
