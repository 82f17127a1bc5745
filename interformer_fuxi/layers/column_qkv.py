"""q, k and v of self-attention with RoPE folded into per-column q/k weights (CPU fast path)."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def column_qkv(x: torch.Tensor, Wq: torch.Tensor, Wk: torch.Tensor, bq: torch.Tensor,
               bk: torch.Tensor, Wv: torch.Tensor, bv: Optional[torch.Tensor]
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""``q[:, n] = x[:, n] Wq[n]ᵀ + bq[n]`` (same for k) and ``v = x Wvᵀ + bv``.

    With ``Wq[n] = R_n W_q`` (:meth:`RotaryEmbedding.rotate_projection`) this gives the
    rotated queries and keys of tokens whose positions are their columns. One batched
    product per projection, over columns, written straight into ``[B, N, dq]`` so that the
    attention kernel reads q and k as densely as from a plain projection; the backward
    accumulates the three input gradients into one buffer (:class:`_ColumnQKV`).

    Shapes:
        x ``[B, N, d]``; Wq, Wk ``[N, dq, d]``; bq, bk ``[N, dq]``; Wv ``[dv, d]``; bv ``[dv]`` or None
        -> q, k ``[B, N, dq]`` and v ``[B, N, dv]``, each contiguous.

    Example::

        >>> x = torch.randn(2, 5, 8)
        >>> W = torch.randn(8, 8).expand(5, 8, 8)
        >>> q, k, v = column_qkv(x, W, W, torch.zeros(5, 8), torch.zeros(5, 8), W[0], torch.zeros(8))
        >>> torch.allclose(q, x @ W[0].T, atol=1e-5), v.shape
        (True, torch.Size([2, 5, 8]))
    """
    return _ColumnQKV.apply(x, Wq, Wk, bq, bk, Wv, bv)


def _by_column(t: torch.Tensor) -> torch.Tensor:
    """``[B, N, c]`` seen as ``[N, B, c]`` (a view: each column's rows are B strided rows)."""
    return t.transpose(0, 1)


class _ColumnQKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, Wq, Wk, bq, bk, Wv, bv):
        B, N, _ = x.shape
        x_cols = _by_column(x)
        q = x.new_empty(B, N, Wq.shape[1])
        k = x.new_empty(B, N, Wk.shape[1])
        # out= a column view: each column's GEMM writes its rows in place, with no transpose copy
        torch.baddbmm(bq.unsqueeze(1), x_cols, Wq.transpose(1, 2), out=_by_column(q))
        torch.baddbmm(bk.unsqueeze(1), x_cols, Wk.transpose(1, 2), out=_by_column(k))
        v = F.linear(x, Wv, bv)
        ctx.save_for_backward(x, Wq, Wk, Wv)
        return q, k, v

    @staticmethod
    def backward(ctx, gq, gk, gv):
        x, Wq, Wk, Wv = ctx.saved_tensors
        B, N, d = x.shape
        gv = gv.reshape(B * N, -1)  # q's and k's gradients are used as [N, B, dq] views as they come
        x_cols, gq_cols, gk_cols = _by_column(x), _by_column(gq), _by_column(gk)
        gx = torch.mm(gv, Wv).view(B, N, d)
        _by_column(gx).baddbmm_(gq_cols, Wq).baddbmm_(gk_cols, Wk)
        gWq = torch.bmm(gq_cols.transpose(1, 2), x_cols)
        gWk = torch.bmm(gk_cols.transpose(1, 2), x_cols)
        gWv = torch.mm(gv.t(), x.reshape(B * N, d))
        gbv = gv.sum(0) if ctx.needs_input_grad[6] else None  # no bias: folded after the attention
        return gx, gWq, gWk, gq_cols.sum(1), gk_cols.sum(1), gWv, gbv
