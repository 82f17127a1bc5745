"""Self-attention forward+backward at InterFormer_default's shape, per backend and head count.

    python benchmarks/attention_backends.py [--batch 1024] [--N 104] [--d 64] [--device cpu]

The Sequence Arch attends over ``N = T + 4`` tokens (100 history items and 4 CLS tokens) of
width ``d = 64`` with a key-padding mask. This prints the best of ``--reps`` forward+backward
passes of one layer for PyTorch's fused kernel (``scaled_dot_product_attention``, which picks
the flash kernel on the CPU), its math backend, a plain ``bmm``-softmax-``bmm``, and on the
CPU our C++ kernel (``layers.fused_attention``, where it applies), at 4, 2 and 1 heads (the
paper's search space has 1, 2, 4 and 8).
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from interformer_fuxi.cpu_heap import keep_freed_memory  # noqa: E402
from interformer_fuxi.layers.fused_attention import fused_attention, fused_attention_applies  # noqa: E402


def fused(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def math_backend(q, k, v, mask):
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def plain(q, k, v, mask):
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v


def ours(q, k, v, mask):
    return fused_attention(q, k, v, mask.view(mask.shape[0], -1), q.shape[-1] ** -0.5)


def best_ms(attention, B, N, d, H, mask, reps, device):
    # q, k, v as the fused projection lays them out: [B, N, H, dh] viewed as [B, H, N, dh]
    q, k, v = (torch.randn(B, N, H, d // H, device=device).transpose(1, 2).requires_grad_()
               for _ in range(3))
    best = float("inf")
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = attention(q, k, v, mask)
        out.backward(torch.ones_like(out))
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--N", type=int, default=104)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--heads", type=int, nargs="+", default=[4, 2, 1])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    if args.device == "cpu":
        keep_freed_memory()
    torch.manual_seed(0)
    mask = torch.rand(args.batch, 1, 1, args.N, device=args.device) > 0.2
    mask[..., 0] = True  # a CLS token: every row has a key
    threads = "" if args.device == "cuda" else f", {torch.get_num_threads()} threads"
    print(f"one layer's attention, forward + backward, batch {args.batch}, N={args.N}, d={args.d}, "
          f"{args.device}{threads}; best of {args.reps}")
    for H in args.heads:
        backends = [("fused", fused), ("math", math_backend), ("bmm-softmax-bmm", plain)]
        probe = torch.empty(1, H, args.N, args.d // H, device=args.device)
        if fused_attention_applies(probe, 0.0):
            backends.append(("ours (C++)", ours))
        row = {name: best_ms(f, args.batch, args.N, args.d, H, mask, args.reps, args.device)
               for name, f in backends}
        print(f"  {H} heads (dh={args.d // H}): " + ", ".join(f"{n} {ms:.0f} ms" for n, ms in row.items()))


if __name__ == "__main__":
    main()
