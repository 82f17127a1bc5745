"""Bidirectional multi-head self-attention with key-padding mask and RoPE (SPEC §2.3)."""
import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .capture import capturing_graph
from .column_qkv import column_qkv
from .fused_attention import fused_attention, fused_attention_applies
from .rope import RotaryEmbedding


class RotaryMultiheadAttention(nn.Module):
    r"""Self-attention over ``[CLS ‖ sequence]`` with rotary positions on q and k.

    A fused ``Linear(d, 3d)`` gives q, k, v; RoPE rotates q and k per head with the
    given per-sample positions; ``F.scaled_dot_product_attention`` runs with the boolean
    key mask broadcast to ``[B, 1, 1, N]``; a ``Linear(d, d)`` projects the heads back.
    On the CPU, for batches of ``fold_min_rows`` rows or more whose valid tokens all sit at
    their column positions (full or post-padded rows), the rotation is folded into
    per-column q/k weights (:func:`column_qkv`): the same result without rotating the
    ``[B, N, d]`` activations and their gradients. On the CPU, heads of 8 or 16 over at
    most 128 tokens run in one C++ kernel (:func:`fused_attention`) instead of the flash
    kernel, whose per-block GEMM calls dominate at these sizes.

    Edge cases: a sample with no valid key is attended as if all keys were valid (so no
    softmax over an empty set, no NaN) and its output is then set to exactly zero.
    A caller whose rows always hold a valid key (the Sequence Arch's CLS tokens) passes
    ``keys_nonempty=True`` and skips that handling. Queries at padded positions are computed
    like any other query (they attend to valid keys); callers ignore them via the mask.

    Args:
        embedding_dim (int): ``d``, divisible by ``num_heads``.
        num_heads (int): ``H``.
        attention_dropout (float): dropout on the attention weights, training only.
        use_rope (bool): apply rotary embeddings to q and k.

    Shapes:
        x: ``[B, N, d]``; mask: ``[B, N]`` bool (True = valid key) or None;
        positions: ``[B, N]`` long or None (``0..N-1``) -> out ``[B, N, d]`` and, with
        ``need_weights=True``, weights ``[B, H, N, N]`` (before dropout).

    Example::

        >>> mha = RotaryMultiheadAttention(embedding_dim=16, num_heads=2)
        >>> x, mask = torch.randn(4, 6, 16), torch.ones(4, 6, dtype=torch.bool)
        >>> out, w = mha(x, mask, need_weights=True)
        >>> out.shape, w.shape
        (torch.Size([4, 6, 16]), torch.Size([4, 2, 6, 6]))
    """

    def __init__(self, embedding_dim: int, num_heads: int, attention_dropout: float = 0.0,
                 use_rope: bool = True) -> None:
        super().__init__()
        if num_heads < 1 or embedding_dim % num_heads != 0:
            raise ValueError(
                f"embedding_dim ({embedding_dim}) must be divisible by num_heads ({num_heads})"
            )
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.head_dim = embedding_dim // num_heads
        self.attention_dropout = float(attention_dropout)
        self.use_rope = use_rope
        self.qkv = nn.Linear(embedding_dim, 3 * embedding_dim)
        self.out_proj = nn.Linear(embedding_dim, embedding_dim)
        self.rope = RotaryEmbedding(self.head_dim) if use_rope else None
        # CPU fast path for tokens at their column positions (tests turn it off to compare).
        # Its per-column products are loops of N small GEMMs, whose fixed cost outweighs the
        # saving below about 256 rows (single-row latency would double): larger batches only.
        self.fold_rope = True
        self.fold_min_rows = 512
        self.fused_cpu_attention = True
        # ONNX export only: hand SDPA an additive float mask (benchmarks/onnx_mask.py compares).
        self.onnx_additive_mask = True

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                positions: Optional[torch.Tensor] = None, need_weights: bool = False,
                keys_nonempty: bool = False) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        B, N, _ = x.shape
        H, dh = self.num_heads, self.head_dim
        if mask is not None:
            mask = mask.bool()
        dropout_p = self.attention_dropout if self.training else 0.0
        out_bias = self.out_proj.bias
        if self.rope is not None and not need_weights and self._positions_are_columns(x, mask, positions):
            # Each output token is a convex combination of the values (weights sum to 1; no
            # dropout), so v's bias passes through unchanged: add it after the output projection,
            # as W_o b_v, instead of to all N values (one [B, N, d] pass fewer each way).
            fold_v_bias = dropout_p == 0.0
            q, k, v = self._column_qkv(x, v_bias=not fold_v_bias)
            if fold_v_bias:
                out_bias = torch.addmv(out_bias, self.out_proj.weight, self.qkv.bias[2 * self.embedding_dim:])
        else:
            qkv = self.qkv(x).view(B, N, 3, H, dh)
            if self.rope is not None:
                if positions is None:
                    positions = torch.arange(N, device=x.device).expand(B, N)
                qk, v = qkv.split([2, 1], dim=2)
                # q and k rotated together in the projection's layout; positions < N by contract
                q, k = self.rope.rotate_tokens(qk, positions, bound=N).unbind(2)
                v = v.squeeze(2)
            else:
                q, k, v = qkv.unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # each [B, H, N, dh]
        if mask is None or (self._eager_cpu(x) and bool(mask.all())):
            has_key, attn_mask = None, None  # every key valid (e.g. full histories): nothing to mask
        elif keys_nonempty:  # the caller's guarantee (e.g. CLS tokens): no empty row to handle
            has_key, attn_mask = None, mask.view(B, 1, 1, N)
        else:
            has_key = mask.any(dim=-1)  # [B]
            # Empty rows attend to everything (finite softmax), then get zeroed below.
            attn_mask = (mask | ~has_key.unsqueeze(-1)).view(B, 1, 1, N)

        weights = None
        if need_weights:
            scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(dh)
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            if has_key is not None:
                weights = weights * has_key.view(B, 1, 1, 1).to(weights.dtype)
            attn = torch.matmul(F.dropout(weights, p=dropout_p, training=self.training), v)
        elif self.fused_cpu_attention and fused_attention_applies(q, dropout_p):
            attn = fused_attention(q, k, v, None if attn_mask is None else attn_mask.view(B, N),
                                   1.0 / math.sqrt(dh))
        else:
            if (attn_mask is not None and self.onnx_additive_mask and capturing_graph()
                    and torch.onnx.is_in_onnx_export()):
                # ONNX: a float mask [B, 1, 1, N] is one broadcast add, where a boolean one becomes
                # selects and NaN checks over every [B, H, N, N] score (ONNX Runtime: about 20% of
                # InterFormer's time at batch 1 and 1024)
                attn_mask = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill(
                    ~attn_mask, float("-inf"))
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)

        out = F.linear(attn.transpose(1, 2).reshape(B, N, self.embedding_dim), self.out_proj.weight, out_bias)
        if has_key is not None:
            out = out * has_key.view(B, 1, 1).to(out.dtype)
        return (out, weights) if need_weights else out

    @staticmethod
    def _eager_cpu(x) -> bool:
        """Where the step may read the batch on the host to pick a path: free on the CPU (a
        sync on a GPU) and outside ``torch.compile`` (which wants one graph)."""
        return x.device.type == "cpu" and not capturing_graph()

    def _positions_are_columns(self, x, mask, positions) -> bool:
        """Whether every valid token's position is its column (full or post-padded rows),
        so that RoPE can be folded into per-column weights. Only on the CPU in eager mode
        (the compiler fuses the plain rotation)."""
        if (not self.fold_rope or x.shape[0] < self.fold_min_rows or not self._eager_cpu(x)
                or torch.is_autocast_enabled("cpu") or x.dtype != self.qkv.weight.dtype):
            return False
        if positions is None:
            return True
        moved = positions != torch.arange(x.shape[1], device=x.device)
        if mask is not None:
            moved &= mask.bool()
        return not bool(moved.any())

    def _column_qkv(self, x, v_bias=True):
        """q, k, v ``[B, N, H, dh]`` (views of contiguous ``[B, N, d]``), q and k rotated by
        their columns through per-column weights (:func:`column_qkv`); v without its bias
        unless ``v_bias``."""
        B, N, d = x.shape
        W, b = self.qkv.weight, self.qkv.bias
        W_qk, b_qk = self.rope.rotate_projection(W[:2 * d], b[:2 * d], N)  # [N, 2d, d], [N, 2d]
        q, k, v = column_qkv(x, W_qk[:, :d], W_qk[:, d:], b_qk[:, :d], b_qk[:, d:], W[2 * d:],
                             b[2 * d:] if v_bias else None)
        return (t.view(B, N, self.num_heads, self.head_dim) for t in (q, k, v))

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.embedding_dim}, num_heads={self.num_heads}, "
                f"attention_dropout={self.attention_dropout}, use_rope={self.use_rope}")


def set_onnx_mask_form(model: nn.Module, additive: bool) -> None:
    """Make every attention layer of ``model`` export its padding mask as an additive float
    mask (``additive``, the default) or as the boolean one (NaN checks in the graph)."""
    for module in model.modules():
        if isinstance(module, RotaryMultiheadAttention):
            module.onnx_additive_mask = additive
