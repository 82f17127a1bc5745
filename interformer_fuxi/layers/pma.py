"""Pooling by Multihead Attention (Lee et al. 2019, Set Transformer) for S_PMA (Eq. 11)."""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .capture import capturing_graph
from .fused_seed_pool import fused_seed_pool, fused_seed_pool_applies


class PMA(nn.Module):
    r"""``k`` learnable seed queries attend over a masked set of tokens.

    ``PMA(S) = Out( Attention(Q_seeds W_q, S W_k, S W_v, key_mask) )`` with separate q/k/v/out
    projections, computed without projecting the N keys and values (see ``forward``), the
    pooling with a hand-written backward (:class:`_SeedPool`), on the CPU in one C++ kernel
    (:func:`fused_seed_pool`, switch ``fused_cpu_pool``). No positions: the pooling is
    order-invariant, so padding side does not matter. A sample with no valid key gets
    zeros (finite).

    Args:
        embedding_dim (int): ``d``, divisible by ``num_heads``.
        num_seeds (int): ``k_pma``; 0 gives an empty output and no parameters.
        num_heads (int): heads.
        attention_dropout (float): dropout on attention weights, training only.

    Shapes:
        S: ``[B, N, d]``, mask: ``[B, N]`` bool (True = valid) or None -> ``[B, k, d]``.
        With ``gather`` ``[B, G]`` (long positions), also the tokens of S there, ``[B, G, d]``:
        the fused pooling reads them in the same pass and adds their gradient into its own.
        With ``seed_offsets`` ``[B, k, d]``, each sample's seeds are ``seeds + seed_offsets``
        (queries that depend on the sample; the plain path).

    Example::

        >>> pma = PMA(embedding_dim=16, num_seeds=2, num_heads=2)
        >>> pma(torch.randn(4, 10, 16), torch.ones(4, 10, dtype=torch.bool)).shape
        torch.Size([4, 2, 16])
    """

    def __init__(self, embedding_dim: int, num_seeds: int, num_heads: int,
                 attention_dropout: float = 0.0) -> None:
        super().__init__()
        if num_seeds < 0:
            raise ValueError(f"num_seeds must be >= 0, got {num_seeds}")
        if num_heads < 1 or embedding_dim % num_heads != 0:
            raise ValueError(
                f"embedding_dim ({embedding_dim}) must be divisible by num_heads ({num_heads})"
            )
        self.embedding_dim = embedding_dim
        self.num_seeds = num_seeds
        self.num_heads = num_heads
        self.attention_dropout = float(attention_dropout)
        # the hand-written backward of the pooling (_SeedPool), and on the CPU the pooling in
        # one C++ kernel (fused_seed_pool); tests turn them off to compare
        self.pool_backward_by_hand = True
        self.fused_cpu_pool = True
        if num_seeds == 0:
            return
        self.seeds = nn.Parameter(torch.empty(num_seeds, embedding_dim))
        nn.init.xavier_uniform_(self.seeds)  # as in the Set Transformer reference code
        self.q_proj = nn.Linear(embedding_dim, embedding_dim)
        # no key bias: it adds the same score to every key of a query, which softmax ignores
        self.k_proj = nn.Linear(embedding_dim, embedding_dim, bias=False)
        self.v_proj = nn.Linear(embedding_dim, embedding_dim)
        self.out_proj = nn.Linear(embedding_dim, embedding_dim)

    def forward(self, S: torch.Tensor, mask: Optional[torch.Tensor] = None,
                gather: Optional[torch.Tensor] = None, seed_offsets: Optional[torch.Tensor] = None):
        B, N, d = S.shape
        gathered = None
        if self.num_seeds == 0:
            out = S.new_zeros(B, 0, d)
            return out if gather is None else (out, _gather(S, gather))
        if seed_offsets is not None:
            return self._per_sample(S, mask, gather, seed_offsets)
        H, dh, k = self.num_heads, d // self.num_heads, self.num_seeds
        # The queries are the same for every sample, so fold them into the key projection
        # instead of projecting all N tokens: q_h . (W_k,h s + b_k,h) = (W_k,h^T q_h) . s + const,
        # and the constant q_h . b_k,h cancels in the softmax. Likewise the values are pooled
        # before their projection: sum_n a_n (W_v,h s_n + b_v,h) = W_v,h (sum_n a_n s_n) + b_v,h.
        # Same attention as projecting keys and values, ~d/(H k) times fewer FLOPs.
        q = self.q_proj(self.seeds).view(k, H, dh)
        q_keys = torch.einsum("khe,hed->hkd", q, self.k_proj.weight.view(H, dh, d)).reshape(H * k, d)
        if mask is None:
            mask = torch.ones(B, N, dtype=torch.bool, device=S.device)
        mask = mask.bool()
        has_key = mask.any(dim=-1)
        # Samples without keys attend to all slots (finite), then are zeroed.
        attn_mask = (mask | ~has_key.unsqueeze(-1)).unsqueeze(-1)              # [B, N, 1]
        # (not under autocast, whose dtypes the forward would mix into the hand-written backward,
        # nor in a captured graph, which holds plain ops, not an autograd Function)
        if (self.pool_backward_by_hand and not (self.training and self.attention_dropout > 0)
                and not torch.is_autocast_enabled(S.device.type) and not capturing_graph()):
            if self.fused_cpu_pool and fused_seed_pool_applies(S, q_keys):
                pooled = fused_seed_pool(S, q_keys, attn_mask.squeeze(-1), 1.0 / math.sqrt(dh), gather)
                if gather is not None:
                    pooled, gathered = pooled
            else:
                pooled = _SeedPool.apply(S, q_keys, attn_mask, 1.0 / math.sqrt(dh))
        else:
            scores = torch.matmul(S, q_keys.t()) / math.sqrt(dh)              # [B, N, H k], one GEMM
            weights = torch.softmax(scores.masked_fill(~attn_mask, float("-inf")), dim=1)  # over N
            weights = F.dropout(weights, p=self.attention_dropout, training=self.training)
            pooled = torch.bmm(weights.transpose(1, 2), S)
        pooled = pooled.view(B, H, k, d)                                       # [B, H, k, d]
        attn = torch.einsum("bhkd,hed->bhke", pooled, self.v_proj.weight.view(H, dh, d))
        attn = attn + self.v_proj.bias.view(1, H, 1, dh)                       # [B, H, k, dh]
        out = self.out_proj(attn.transpose(1, 2).reshape(B, k, d)) * has_key.view(B, 1, 1).to(S.dtype)
        if gather is None:
            return out
        return out, (_gather(S, gather) if gathered is None else gathered)

    def _per_sample(self, S, mask, gather, seed_offsets):
        """The pooling with per-sample seeds ``seeds + seed_offsets`` (``[B, k, d]``)."""
        B, N, d = S.shape
        H, dh, k = self.num_heads, d // self.num_heads, self.num_seeds
        q = self.q_proj(self.seeds + seed_offsets).view(B, k, H, dh)
        q_keys = torch.einsum("bkhe,hed->bhkd", q, self.k_proj.weight.view(H, dh, d)).reshape(B, H * k, d)
        if mask is None:
            mask = torch.ones(B, N, dtype=torch.bool, device=S.device)
        mask = mask.bool()
        has_key = mask.any(dim=-1)
        attn_mask = (mask | ~has_key.unsqueeze(-1)).unsqueeze(-1)              # [B, N, 1]
        scores = torch.bmm(S, q_keys.transpose(1, 2)) / math.sqrt(dh)         # [B, N, H k]
        weights = torch.softmax(scores.masked_fill(~attn_mask, float("-inf")), dim=1)
        weights = F.dropout(weights, p=self.attention_dropout, training=self.training)
        pooled = torch.bmm(weights.transpose(1, 2), S).view(B, H, k, d)
        attn = torch.einsum("bhkd,hed->bhke", pooled, self.v_proj.weight.view(H, dh, d))
        attn = attn + self.v_proj.bias.view(1, H, 1, dh)
        out = self.out_proj(attn.transpose(1, 2).reshape(B, k, d)) * has_key.view(B, 1, 1).to(S.dtype)
        return out if gather is None else (out, _gather(S, gather))

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.embedding_dim}, num_seeds={self.num_seeds}, "
                f"num_heads={self.num_heads}")


def _gather(S: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The tokens ``S[b, index[b, g]]``: ``[B, N, d]``, ``[B, G]`` -> ``[B, G, d]``."""
    return S.gather(1, index.unsqueeze(-1).expand(-1, -1, S.shape[-1]))


class _SeedPool(torch.autograd.Function):
    r"""``weights = softmax_N(mask(S qᵀ · scale))``, ``pooled = weightsᵀ S``, with a hand-written
    backward: S is used twice (scores and pooling), and its two gradients,
    ``g_scores q`` and ``weights g_pooled``, come out of one batched product over
    ``[g_scores ‖ weights]``, without a GEMM of inner size ``H k`` and an addition of two
    ``[B, N, d]`` gradients.

    Shapes: S ``[B, N, d]``, q ``[H k, d]``, attn_mask ``[B, N, 1]`` bool -> ``[B, H k, d]``.
    """

    @staticmethod
    def forward(ctx, S, q, attn_mask, scale):
        B, N, d = S.shape
        scores = torch.mm(S.reshape(B * N, d), q.t()).view(B, N, -1)
        weights = torch.softmax(scores.mul_(scale).masked_fill_(~attn_mask, float("-inf")), dim=1)
        ctx.save_for_backward(S, q, weights)
        ctx.scale = scale
        return torch.bmm(weights.transpose(1, 2), S)

    @staticmethod
    def backward(ctx, g_pooled):
        S, q, weights = ctx.saved_tensors
        B, N, d = S.shape
        g_weights = torch.bmm(S, g_pooled.transpose(1, 2))                     # [B, N, H k]
        g_scores = weights * (g_weights - (weights * g_weights).sum(1, keepdim=True))
        g_scores.mul_(ctx.scale)
        g_S = torch.bmm(torch.cat([g_scores, weights], dim=-1),
                        torch.cat([q.expand(B, -1, -1), g_pooled], dim=1))
        g_q = torch.mm(g_scores.reshape(B * N, -1).t(), S.reshape(B * N, d))
        return g_S, g_q, None, None
