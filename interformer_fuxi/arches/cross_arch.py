"""Cross Arch (SPEC §2.1, Eqs. 10-11): gated summaries exchanged between the two modes."""
import torch
from torch import nn

from ..layers import LCE, PMA, Gating, recent_positions

PMA_QUERIES = ("learned", "personalized")


class CrossArch(nn.Module):
    r"""Summarises each mode for the other one.

    - non-sequence summary ``X_sum = Gating(LCE(X))``: ``n`` tokens -> ``n_sum`` tokens;
    - sequence summary ``S_sum = Gating([S_CLS ‖ PMA(S) ‖ S_recent])``: the ``n_sum`` CLS
      positions, ``k_pma`` PMA tokens over all valid positions of ``S`` (CLS included), and
      the ``k_recent`` newest valid items (mask-aware, zeros when the history is shorter).

    Args:
        num_tokens (int): ``n``, non-sequence tokens.
        embedding_dim (int): ``d``.
        num_cls_tokens (int): ``n_sum``.
        num_pma_tokens (int): ``k_pma`` (0 = without PMA).
        num_recent_tokens (int): ``k_recent`` (0 = without recent tokens).
        num_heads (int): heads of the PMA attention.
        use_gating, gating_form, gating_activation: see ``layers.Gating``.
        attention_dropout (float): PMA attention dropout.
        pma_query (str): ``learned`` (the paper: ``Q_pma`` shared by all samples) or
            ``personalized`` (not in the paper: ``Q_pma + Linear(flatten(X_sum))``, so the
            pooling can look for the target, as DIN's attention does; the map starts at zero).

    Shapes:
        X ``[B, n, d]``, S ``[B, n_sum + T, d]``, mask ``[B, n_sum + T]`` ->
        X_sum ``[B, n_sum, d]``, S_sum ``[B, n_sum + k_pma + k_recent, d]``.

    Example::

        >>> cross = CrossArch(num_tokens=5, embedding_dim=16, num_cls_tokens=4)
        >>> X, S = torch.randn(8, 5, 16), torch.randn(8, 4 + 30, 16)
        >>> X_sum, S_sum = cross(X, S, torch.ones(8, 34, dtype=torch.bool))
        >>> X_sum.shape, S_sum.shape
        (torch.Size([8, 4, 16]), torch.Size([8, 8, 16]))
    """

    def __init__(self, num_tokens, embedding_dim, num_cls_tokens=4, num_pma_tokens=2,
                 num_recent_tokens=2, num_heads=2, use_gating=True, gating_form="highway",
                 gating_activation="sigmoid", attention_dropout=0.0, pma_query="learned"):
        super().__init__()
        if pma_query not in PMA_QUERIES:
            raise ValueError(f"pma_query must be one of {', '.join(PMA_QUERIES)}, got {pma_query!r}")
        self.num_cls_tokens = num_cls_tokens
        self.num_recent_tokens = num_recent_tokens
        self.lce = LCE(num_tokens, num_cls_tokens)
        self.x_gating = Gating(embedding_dim, gating_form, gating_activation, enabled=use_gating)
        self.pma = PMA(embedding_dim, num_pma_tokens, num_heads, attention_dropout)
        self.s_gating = Gating(embedding_dim, gating_form, gating_activation, enabled=use_gating)
        self.num_summary_tokens = num_cls_tokens + num_pma_tokens + num_recent_tokens
        self.pma_query = None
        if pma_query == "personalized" and num_pma_tokens > 0:
            self.pma_query = nn.Linear(num_cls_tokens * embedding_dim, num_pma_tokens * embedding_dim)
            nn.init.zeros_(self.pma_query.weight)
            nn.init.zeros_(self.pma_query.bias)

    def summarize_nonsequence(self, X):
        """``X_sum = Gating(LCE(X))``: ``[B, n, d] -> [B, n_sum, d]``."""
        return self.x_gating(self.lce(X))

    def summarize_sequence(self, S, mask, X_sum=None):
        """``S_sum``: ``[B, n_sum + T, d] -> [B, n_sum + k_pma + k_recent, d]`` (``X_sum`` is read
        by a personalized PMA query only)."""
        B = S.shape[0]
        n, k = self.num_cls_tokens, self.num_recent_tokens
        recent, recent_mask = recent_positions(mask[:, n:], k)
        # The CLS positions and the newest items in one gather, read by the PMA alongside its
        # pooling: its fused backward adds their gradient into S's (no buffer of S's size for them).
        index = torch.cat([torch.arange(n, device=S.device).expand(B, n), recent + n], dim=1)
        offsets = None
        if self.pma_query is not None:
            offsets = self.pma_query(X_sum.flatten(1)).view(B, self.pma.num_seeds, -1)
        pooled, tokens = self.pma(S, mask, gather=index, seed_offsets=offsets)
        cls, recent = tokens.split([n, k], dim=1)
        recent = recent.masked_fill(~recent_mask.unsqueeze(-1), 0.0)  # slots past a short history
        return self.s_gating(torch.cat([cls, pooled, recent], dim=1))

    def forward(self, X, S, mask):
        X_sum = self.summarize_nonsequence(X)
        return X_sum, self.summarize_sequence(S, mask, X_sum)
