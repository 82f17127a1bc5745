"""Self-attention for small heads in one C++ kernel, built on first use (CPU fast path).

At the paper's sizes (16-wide heads, about 100 tokens) PyTorch's CPU flash attention spends
most of its time calling a GEMM per small block. ``kernels/attention_cpu.cpp`` keeps one
(row, head)'s keys and values in registers and L1 and computes each query's scores, softmax
and weighted sum in place; the backward recomputes the probabilities from the saved
log-sum-exp. It is compiled once per machine (about 20 s, cached by PyTorch under
``~/.cache/torch_extensions``). Without a C++ compiler, or with
``INTERFORMER_CPU_ATTENTION=0``, :func:`fused_attention_kernel` returns None and callers keep
``scaled_dot_product_attention``.
"""
from typing import Optional

import torch

from .cpu_kernels import CpuKernel, key_bias

MAX_TOKENS = 128          # keys per row the kernel holds (its score registers)
HEAD_DIMS = (8, 16)       # head widths it is compiled for (and faster than the flash kernel at)
fused_attention_kernel = CpuKernel("attention_cpu.cpp", "interformer_attention", "INTERFORMER_CPU_ATTENTION",
                                   "scaled_dot_product_attention", "fused CPU attention")
"""``torch.ops.interformer_attention`` (``forward``, ``backward``), built on the first call;
None where it cannot be built (logged once) or ``INTERFORMER_CPU_ATTENTION=0``."""


def fused_attention_applies(q: torch.Tensor, dropout_p: float) -> bool:
    """Whether :func:`fused_attention` can run ``q`` ``[B, H, N, dh]``: float32 on the CPU in
    eager mode, no autocast, no attention dropout, ``N <= MAX_TOKENS``, ``dh`` in ``HEAD_DIMS``."""
    return (dropout_p == 0.0 and q.shape[-2] <= MAX_TOKENS and q.shape[-1] in HEAD_DIMS
            and fused_attention_kernel.runs_on(q))


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    key_mask: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    r"""``softmax(q kᵀ · scale + mask) v`` per head, differentiable in q, k and v.

    Shapes:
        q, k, v ``[B, H, N, dh]`` (any strides, contiguous last axis); key_mask ``[B, N]``
        bool (True = valid key; every row needs one) or None -> ``[B, H, N, dh]``, a view of
        contiguous ``[B, N, H, dh]`` memory (so ``transpose(1, 2).reshape(B, N, H * dh)`` is free).

    Example::

        >>> q = k = v = torch.randn(2, 4, 10, 16)
        >>> ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        >>> torch.allclose(fused_attention(q, k, v, None, 0.25), ref, atol=1e-5)
        True
    """
    bias = key_bias(key_mask, q.dtype)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _FusedAttention.apply(q, k, v, bias, scale)
    return fused_attention_kernel().forward(q, k, v, bias, scale)[0]


class _FusedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, scale):
        out, lse = fused_attention_kernel().forward(q, k, v, bias, scale)
        ctx.save_for_backward(q, k, v, bias, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v, bias, out, lse = ctx.saved_tensors
        if grad_out.stride(-1) != 1:
            grad_out = grad_out.contiguous()
        gq, gk, gv = fused_attention_kernel().backward(q, k, v, bias, out, lse, grad_out, ctx.scale)
        return gq, gk, gv, None, None
