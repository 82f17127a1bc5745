"""The Sequence Arch's pre-norm PFFN block in one C++ kernel (CPU fast path).

Unfused, ``S + PFFN(LayerNorm(S))`` with the linear form is a LayerNorm, two skinny products
(``[B, N, d] x [d, n_sum]`` and back) and a residual addition: each one pass over the
``[B, N, d]`` tokens in memory, and as many again in the backward, for little arithmetic.
``kernels/pffn_block_cpu.cpp`` normalises, projects and adds one token at a time in
registers: one read and one write forward; the backward recomputes the normalisation and
reads the tokens and the output gradient once. Built on first use like the attention kernel
(:class:`CpuKernel`); ``INTERFORMER_CPU_PFFN=0`` turns it off.
"""
import torch
from torch import nn

from .cpu_kernels import CpuKernel

MAX_RANK = 16             # summary tokens the kernel holds (n_sum)
MAX_DIM = 256             # embedding widths: multiples of 16 up to this
fused_pffn_kernel = CpuKernel("pffn_block_cpu.cpp", "interformer_pffn_block", "INTERFORMER_CPU_PFFN",
                              "the PyTorch ops", "fused CPU PFFN block")


def fused_pffn_applies(S: torch.Tensor, X_sum: torch.Tensor, weight: torch.Tensor, norm: nn.Module) -> bool:
    """Whether :func:`fused_pffn_block` can run: float32 on the CPU in eager mode without
    autocast, ``norm`` an affine ``LayerNorm`` over ``d``, ``d`` a multiple of 16 up to 256,
    at most 16 summary tokens."""
    d = S.shape[-1]
    return (isinstance(norm, nn.LayerNorm) and norm.elementwise_affine and norm.bias is not None
            and norm.normalized_shape == (d,) and d % 16 == 0 and d <= MAX_DIM
            and 1 <= weight.shape[0] <= MAX_RANK and weight.shape == (X_sum.shape[1], d)
            and fused_pffn_kernel.runs_on(S, X_sum, weight))


def fused_pffn_block(S: torch.Tensor, X_sum: torch.Tensor, weight: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    r"""``S + (LN(S) X_sumᵀ) W``: the pre-norm residual block of the linear-form PFFN.

    Differentiable in S, X_sum, W and the LayerNorm's weight and bias.

    Shapes:
        S ``[B, N, d]``; X_sum ``[B, n_sum, d]``; weight (PFFN's ``W``) ``[n_sum, d]`` -> ``[B, N, d]``.

    Example::

        >>> norm, S, X_sum, W = nn.LayerNorm(16), torch.randn(2, 5, 16), torch.randn(2, 4, 16), torch.randn(4, 16)
        >>> ref = S + torch.bmm(norm(S), X_sum.transpose(1, 2)) @ W
        >>> torch.allclose(fused_pffn_block(S, X_sum, W, norm), ref, atol=1e-5)
        True
    """
    args = (S.contiguous(), X_sum.contiguous(), weight.contiguous(), norm.weight, norm.bias, norm.eps)
    if torch.is_grad_enabled() and any(t.requires_grad for t in args[:5]):
        return _FusedPFFNBlock.apply(*args)
    return fused_pffn_kernel().forward(*args)


class _FusedPFFNBlock(torch.autograd.Function):
    @staticmethod
    def forward(ctx, S, X_sum, weight, gamma, beta, eps):
        ctx.save_for_backward(S, X_sum, weight, gamma, beta)
        ctx.eps = eps
        return fused_pffn_kernel().forward(S, X_sum, weight, gamma, beta, eps)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        S, X_sum, weight, gamma, beta = ctx.saved_tensors
        grads = fused_pffn_kernel().backward(S, X_sum, weight, gamma, beta, ctx.eps, grad_out.contiguous())
        return (*grads, None)
