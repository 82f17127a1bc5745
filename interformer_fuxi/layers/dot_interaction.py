"""DOT interaction: pairwise inner products of tokens -> new tokens."""
import torch
from torch import nn


class DotInteraction(nn.Module):
    r"""Upper triangle (``i < j``) of ``Z Z^T`` mapped by a Linear to ``n_out`` tokens.

    As in DLRM: every unordered pair of distinct tokens contributes one inner product;
    self products are left out. The pair indices are a precomputed buffer.

    Args:
        num_inputs (int): ``n_in`` tokens.
        embedding_dim (int): ``d``.
        num_outputs (int): ``n_out`` tokens.

    Shapes:
        Z: ``[B, n_in, d]`` -> ``[B, n_out, d]``.

    Example::

        >>> dot = DotInteraction(num_inputs=6, embedding_dim=8, num_outputs=3)
        >>> dot(torch.randn(4, 6, 8)).shape
        torch.Size([4, 3, 8])
    """

    def __init__(self, num_inputs: int, embedding_dim: int, num_outputs: int) -> None:
        super().__init__()
        self.num_inputs = num_inputs
        self.embedding_dim = embedding_dim
        self.num_outputs = num_outputs
        rows, cols = torch.triu_indices(num_inputs, num_inputs, offset=1)
        self.register_buffer("triu_rows", rows, persistent=False)
        self.register_buffer("triu_cols", cols, persistent=False)
        self.num_pairs = num_inputs * (num_inputs - 1) // 2
        # num_outputs=0: only ``pairwise`` is used (DLRM's top MLP reads the raw products)
        self.linear = nn.Linear(self.num_pairs, num_outputs * embedding_dim) if num_outputs > 0 else None

    def pairwise(self, Z: torch.Tensor) -> torch.Tensor:
        """Inner products of all token pairs ``i < j``: ``[B, n_in, d] -> [B, n_in(n_in-1)/2]``."""
        gram = torch.bmm(Z, Z.transpose(1, 2))  # [B, n_in, n_in]
        return gram[:, self.triu_rows, self.triu_cols]

    def forward(self, Z: torch.Tensor) -> torch.Tensor:
        return self.linear(self.pairwise(Z)).view(-1, self.num_outputs, self.embedding_dim)

    def extra_repr(self) -> str:
        return (f"num_inputs={self.num_inputs}, embedding_dim={self.embedding_dim}, "
                f"num_outputs={self.num_outputs}")
