"""Rotary position embeddings (Su et al. 2021) with per-sample positions."""
from typing import Tuple

import torch
from torch import nn

from .capture import capturing_graph


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last axis (the rotate-half pairing)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    r"""Rotates query/key pairs by angles proportional to each token's position.

    Uses the rotate-half convention: dimension ``i`` is paired with ``i + dh/2`` and
    rotated by ``pos * base^(-2i/dh)``. Positions are given per sample (``[B, N]``), so
    padded histories can use :func:`valid_positions` and get padding-invariant scores.
    ``cos``/``sin`` tables are non-persistent buffers (they follow ``.to(device)`` but
    stay out of checkpoints), built once and regrown only when a larger position appears.

    Args:
        head_dim (int): ``dh``, must be even.
        base (float): frequency base.
        max_positions (int): initial table length (grown on demand).

    Shapes:
        x: ``[B, H, N, dh]``, positions: ``[B, N]`` long -> ``[B, H, N, dh]``.

    Example::

        >>> rope = RotaryEmbedding(head_dim=4)
        >>> pos = torch.arange(5).expand(2, 5)
        >>> rope(torch.randn(2, 3, 5, 4), pos).shape
        torch.Size([2, 3, 5, 4])
    """

    def __init__(self, head_dim: int, base: float = 10000.0, max_positions: int = 256) -> None:
        super().__init__()
        if head_dim % 2 != 0 or head_dim <= 0:
            raise ValueError(f"head_dim must be a positive even number, got {head_dim}")
        self.head_dim = head_dim
        self.base = float(base)
        self.register_buffer("cos_cached", torch.empty(0, head_dim), persistent=False)
        self.register_buffer("sin_cached", torch.empty(0, head_dim), persistent=False)
        self._build(max(int(max_positions), 1))

    def _build(self, length: int) -> None:
        # Always float32 from scratch (even after .half()): large angles need the precision.
        device = self.cos_cached.device
        dims = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device)
        inv_freq = self.base ** (-dims / self.head_dim)
        pos = torch.arange(length, dtype=torch.float32, device=device)
        freqs = torch.outer(pos, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)  # [length, dh], matches rotate_half pairing
        self.cos_cached = emb.cos()
        self.sin_cached = emb.sin()

    def _grow(self, positions, bound):
        """Make the tables cover the positions; ``bound``, a known upper bound (e.g. ``N`` for
        :func:`valid_positions` ranks), spares the host sync of reading ``positions.max()``. A
        captured graph keeps the tables as built (its sequence length is symbolic)."""
        if capturing_graph():
            return
        needed = int(bound) if bound is not None else (int(positions.max().item()) + 1 if positions.numel() else 0)
        if needed > self.cos_cached.shape[0]:
            # Grow geometrically so a slowly increasing max position rebuilds rarely.
            self._build(max(needed, 2 * self.cos_cached.shape[0]))

    def rotate_tokens(self, x: torch.Tensor, positions: torch.Tensor, bound=None) -> torch.Tensor:
        """The same rotation for token-major ``x [B, N, ..., dh]`` (e.g. q and k together as
        ``[B, N, 2, H, dh]``, straight from a fused projection).

        Written on the two halves, ``[x1 c - x2 s, x2 c + x1 s]`` with the ``dh/2`` distinct
        angles, broadcast over q/k and heads; its backward is the inverse rotation of the
        gradient (:class:`_Rotate`), so autograd keeps no copy of ``x``.
        """
        self._grow(positions, bound)
        B, N, half = x.shape[0], x.shape[1], self.head_dim // 2
        shape = (B, N) + (1,) * (x.dim() - 3) + (half,)
        positions = positions.long()
        cos = self.cos_cached[:, :half][positions].reshape(shape).to(x.dtype)
        sin = self.sin_cached[:, :half][positions].reshape(shape).to(x.dtype)
        if capturing_graph():  # a compiler fuses the plain form and derives its backward; an exported graph holds no autograd Function
            x1, x2 = x.chunk(2, dim=-1)
            return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
        return _Rotate.apply(x, cos, sin)

    def rotate_projection(self, weight: torch.Tensor, bias: torch.Tensor, length: int
                          ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-column copies of a projection with the rotation folded in.

        Rotating a projection's output is a linear map, so the token at column ``n`` gets
        ``R_n (W x + b) = (R_n W) x + R_n b``. Returns those ``R_n W`` and ``R_n b`` for
        ``n = 0..length-1``; a batched product then projects and rotates in one pass, with
        no element-wise rotation of the ``[B, N, ...]`` activations and none of its gradient.
        The tables are small (``length`` copies of ``W``), and autograd carries the
        gradient back to ``W`` and ``b``.

        Shapes:
            weight ``[G*dh, d]`` (``G`` head blocks of ``dh`` rows, e.g. q and k of every
            head), bias ``[G*dh]`` -> ``[length, G*dh, d]`` and ``[length, G*dh]``.
        """
        self._grow(None, length)
        half, rows = self.head_dim // 2, weight.shape[0]
        cos = self.cos_cached[:length, :half].to(weight.dtype)
        sin = self.sin_cached[:length, :half].to(weight.dtype)

        def rotate(t, angles_shape):  # t: [G, dh, ...] -> [length, G, dh, ...]
            c, s = cos.view(angles_shape), sin.view(angles_shape)
            t1, t2 = t[:, :half].unsqueeze(0), t[:, half:].unsqueeze(0)
            return torch.cat((t1 * c - t2 * s, t2 * c + t1 * s), dim=2)

        W = rotate(weight.view(-1, self.head_dim, weight.shape[1]), (length, 1, half, 1))
        b = rotate(bias.view(-1, self.head_dim), (length, 1, half))
        return W.reshape(length, rows, weight.shape[1]), b.reshape(length, rows)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self._grow(positions, None)
        positions = positions.long()
        cos = self.cos_cached[positions].unsqueeze(1).to(x.dtype)  # [B, 1, N, dh]
        sin = self.sin_cached[positions].unsqueeze(1).to(x.dtype)
        return x * cos + rotate_half(x) * sin

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base}"


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: float) -> torch.Tensor:
    """``[x1 c - x2 s, x2 c + x1 s]`` (``sign=-1``: the inverse rotation), written straight
    into the two halves of one output: four passes, no temporaries, no concatenation."""
    half = x.shape[-1] // 2
    out = torch.empty_like(x)
    x1, x2, o1, o2 = x[..., :half], x[..., half:], out[..., :half], out[..., half:]
    torch.mul(x1, cos, out=o1)
    o1.addcmul_(x2, sin, value=-sign)
    torch.mul(x2, cos, out=o2)
    o2.addcmul_(x1, sin, value=sign)
    return out


class _Rotate(torch.autograd.Function):
    """Rotation by angles ``(cos, sin)``; the gradient is rotated back by the same angles.
    Only the small tables are saved for backward (angles carry no gradient)."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin, 1.0)

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, sin, -1.0), None, None
