"""Early aggregation of the sequence for the ``sole`` mode (Figure 3): mean, MLP or MHA."""
from torch import nn

from ..layers import RotaryMultiheadAttention, activation, recent_tokens, valid_positions

AGGREGATIONS = ("mean", "mlp", "mha")


class EarlyAggregation(nn.Module):
    r"""Aggregates ``S`` into ONE token that joins the non-sequence tokens (no Sequence Arch).

    - ``mean``: masked mean of the valid positions;
    - ``mlp``: the history re-aligned newest-first (so padding side does not matter),
      flattened, then ``Linear(T*d, d) -> act -> Linear(d, d)``;
    - ``mha``: one rotary self-attention layer over the valid positions, then masked mean.
    With an empty history, ``mean`` and ``mha`` give a zero token.

    Args:
        embedding_dim (int): ``d``.
        max_len (int): ``T``.
        mode (str): ``mean``, ``mlp`` or ``mha``.
        num_heads (int), hidden_activations (str), attention_dropout (float).

    Shapes:
        S ``[B, T, d]``, mask ``[B, T]`` -> ``[B, 1, d]``.

    Example::

        >>> agg = EarlyAggregation(16, max_len=30, mode="mlp")
        >>> agg(torch.randn(4, 30, 16), torch.ones(4, 30, dtype=torch.bool)).shape
        torch.Size([4, 1, 16])
    """

    def __init__(self, embedding_dim, max_len, mode="mean", num_heads=2, hidden_activations="SiLU",
                 attention_dropout=0.0):
        super().__init__()
        if mode not in AGGREGATIONS:
            raise ValueError(f"early_aggregation must be one of {', '.join(AGGREGATIONS)}, got {mode!r}")
        self.mode = mode
        if mode == "mlp":
            self.mlp = nn.Sequential(nn.Linear(max_len * embedding_dim, embedding_dim),
                                     activation(hidden_activations), nn.Linear(embedding_dim, embedding_dim))
        elif mode == "mha":
            self.mha = RotaryMultiheadAttention(embedding_dim, num_heads, attention_dropout)

    @staticmethod
    def masked_mean(S, mask):
        m = mask.unsqueeze(-1).to(S.dtype)
        return (S * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1.0)

    def forward(self, S, mask):
        if self.mode == "mlp":
            newest_first, _ = recent_tokens(S, mask, S.shape[1])
            return self.mlp(newest_first.flatten(1)).unsqueeze(1)
        if self.mode == "mha":
            S = S + self.mha(S, mask, valid_positions(mask))
        return self.masked_mean(S, mask)
