"""PMA's pooling (softmax over the tokens for shared seed queries) in one C++ kernel (CPU).

Unfused, the pooling is a skinny product ``[B N, d] x [d, J]``, a softmax over ``N`` and a
batched product, and three more skinny products backward: each a pass over the ``[B, N, d]``
tokens in memory for little arithmetic. ``kernels/seed_pool_cpu.cpp`` reads a row's tokens
once, keeps its scores and weights in L1, and writes the tokens' gradient once. Built on
first use like the attention kernel (:class:`CpuKernel`); ``INTERFORMER_CPU_POOL=0`` turns it off.
"""
from typing import Optional

import torch

from .cpu_kernels import CpuKernel, key_bias

MAX_QUERIES = 16          # heads x seeds
MAX_DIM = 256             # embedding widths: multiples of 16 up to this
MAX_TOKENS = 1024
fused_seed_pool_kernel = CpuKernel("seed_pool_cpu.cpp", "interformer_seed_pool", "INTERFORMER_CPU_POOL",
                                   "the PyTorch ops", "fused CPU seed pooling")


def fused_seed_pool_applies(S: torch.Tensor, q: torch.Tensor) -> bool:
    """Whether :func:`fused_seed_pool` can run: float32 on the CPU in eager mode without
    autocast, ``d`` a multiple of 16 up to 256, at most 16 queries and 1024 tokens."""
    d = S.shape[-1]
    return (d % 16 == 0 and d <= MAX_DIM and 1 <= q.shape[0] <= MAX_QUERIES and 1 <= S.shape[1] <= MAX_TOKENS
            and fused_seed_pool_kernel.runs_on(S, q))


def fused_seed_pool(S: torch.Tensor, q: torch.Tensor, key_mask: torch.Tensor, scale: float,
                    gather: Optional[torch.Tensor] = None):
    r"""``softmax_N(S qᵀ · scale, masked)ᵀ S``: each query's weighted sum of the tokens.

    Differentiable in S and q. With ``gather``, also the tokens of S at those positions, read
    in the same pass (their gradient is added into S's by the same backward, without a zeroed
    buffer of S's size).

    Shapes:
        S ``[B, N, d]``; q ``[J, d]``; key_mask ``[B, N]`` bool (True = valid; every row needs
        one); gather ``[B, G]`` long or None -> ``[B, J, d]`` (and ``[B, G, d]`` with ``gather``).

    Example::

        >>> S, q, mask = torch.randn(2, 5, 16), torch.randn(3, 16), torch.ones(2, 5, dtype=torch.bool)
        >>> ref = torch.softmax(S @ q.T * 0.5, dim=1).transpose(1, 2) @ S
        >>> torch.allclose(fused_seed_pool(S, q, mask, 0.5), ref, atol=1e-5)
        True
    """
    bias = key_bias(key_mask, S.dtype)
    S, q = S.contiguous(), q.contiguous()
    index = None if gather is None else gather.contiguous()
    if torch.is_grad_enabled() and (S.requires_grad or q.requires_grad):
        pooled, gathered = _FusedSeedPool.apply(S, q, bias, scale, index)
    else:
        pooled, _, gathered = fused_seed_pool_kernel().forward(S, q, bias, scale, index)
    return pooled if gather is None else (pooled, gathered)


class _FusedSeedPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, S, q, bias, scale, index):
        pooled, weights, gathered = fused_seed_pool_kernel().forward(S, q, bias, scale, index)
        ctx.save_for_backward(S, q, weights, index)
        ctx.scale = scale
        return pooled, gathered

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_pooled, grad_gathered):
        S, q, weights, index = ctx.saved_tensors
        if index is None:  # no gathered tokens: their (empty) gradient is not passed
            grad_gathered = None
        gS, gq = fused_seed_pool_kernel().backward(S, q, weights, grad_pooled.contiguous(), ctx.scale, index,
                                                   None if grad_gathered is None else grad_gathered.contiguous())
        return gS, gq, None, None, None
