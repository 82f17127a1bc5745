"""q, k and v of self-attention with RoPE folded into per-column q/k weights (CPU fast path)."""
from typing import Tuple

import torch
import torch.nn.functional as F


def column_qkv(x: torch.Tensor, W_cols: torch.Tensor, b_cols: torch.Tensor, Wv: torch.Tensor,
               bv: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""``qk[:, n] = x[:, n] W_cols[n]ᵀ + b_cols[n]`` and ``v = x Wvᵀ + bv``.

    With ``W_cols[n] = [R_n W_q ; R_n W_k]`` (:meth:`RotaryEmbedding.rotate_projection`) this
    gives the rotated queries and keys, side by side, of tokens whose positions are their
    columns. One batched product over columns, written straight into ``[B, N, c]``, so that
    the attention kernel reads q and k as densely as from a plain projection; the backward
    takes their gradient as one tensor and accumulates the input's into one buffer
    (:class:`_ColumnQKV`).

    Shapes:
        x ``[B, N, d]``; W_cols ``[N, c, d]``; b_cols ``[N, c]``; Wv ``[dv, d]``; bv ``[dv]``
        -> qk ``[B, N, c]`` and v ``[B, N, dv]``, each contiguous.

    Example::

        >>> x = torch.randn(2, 5, 8)
        >>> W = torch.randn(8, 8)
        >>> qk, v = column_qkv(x, W.expand(5, 8, 8), torch.zeros(5, 8), W, torch.zeros(8))
        >>> torch.allclose(qk, x @ W.T, atol=1e-5), v.shape
        (True, torch.Size([2, 5, 8]))
    """
    return _ColumnQKV.apply(x, W_cols, b_cols, Wv, bv)


def _by_column(t: torch.Tensor) -> torch.Tensor:
    """``[B, N, c]`` seen as ``[N, B, c]`` (a view: each column's rows are B strided rows)."""
    return t.transpose(0, 1)


class _ColumnQKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_cols, b_cols, Wv, bv):
        B, N, _ = x.shape
        qk = x.new_empty(B, N, W_cols.shape[1])
        # out= a column view: each column's GEMM writes its rows in place, with no transpose copy
        torch.baddbmm(b_cols.unsqueeze(1), _by_column(x), W_cols.transpose(1, 2), out=_by_column(qk))
        v = F.linear(x, Wv, bv)
        ctx.save_for_backward(x, W_cols, Wv)
        return qk, v

    @staticmethod
    def backward(ctx, g_qk, gv):
        x, W_cols, Wv = ctx.saved_tensors
        B, N, d = x.shape
        gv = gv.reshape(B * N, -1)  # qk's gradient is used as an [N, B, c] view as it comes
        x_cols, g_cols = _by_column(x), _by_column(g_qk)
        gx = torch.mm(gv, Wv).view(B, N, d)
        _by_column(gx).baddbmm_(g_cols, W_cols)
        gW_cols = torch.bmm(g_cols.transpose(1, 2), x_cols)
        gWv = torch.mm(gv.t(), x.reshape(B * N, d))
        return gx, gW_cols, g_cols.sum(1), gWv, gv.sum(0)
