"""Predictions of the fast paths against the plain fp32 CPU path, on the same weights.

    python benchmarks/agreement.py                       # CPU: fused Adam, skipped padding, folded RoPE
    python benchmarks/agreement.py --compile             # + torch.compile against eager
    python benchmarks/agreement.py --device cuda [--compile]   # + CUDA fp32 and bf16 against CPU

For each model (InterFormer, DIN, TransAct, DHEN at their paper/BARS settings, T=100) it
prints the largest absolute difference of the click probabilities on one batch and exits
with 1 when a path is off: fp32 paths within 1e-4, bf16 within 2e-2.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from switch_ab import holders, switch_setter  # noqa: E402
from throughput import MODELS, amazon_feature_map, build, make_batches  # noqa: E402

FP32_TOL, BF16_TOL = 1e-4, 2e-2


@torch.no_grad()
def probabilities(model, data):
    model.eval()
    return model.predict_batch(data.to(model.device)).float().cpu()


def check_batch(fmap, size):
    """One CPU batch of full histories, a quarter of them emptied (so InterFormer's rows fall
    into two length groups), with random labels."""
    data = make_batches(fmap, size, 1, "cpu")[0]
    for field in ("item_history", "cate_history"):  # some empty histories too
        data[: size // 4, fmap.get_column_index(field)] = 0
    data[:, -1] = torch.randint(0, 2, (size,))
    return data


def compare(name, reference, other, tol):
    diff = (reference - other).abs().max().item()
    ok = diff <= tol
    print(f"  {name:45s} max |diff| {diff:.2e}  {'ok' if ok else f'FAIL (> {tol:g})'}", flush=True)
    return ok


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--compile", action="store_true", help="also check torch.compile")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--T", type=int, default=100)
    args = parser.parse_args(argv)
    fmap = amazon_feature_map(args.T)
    data = check_batch(fmap, args.batch)
    ok = True
    for name in args.models:
        print(name, flush=True)
        reference = build(name, fmap, "cpu")
        folds = holders(reference, "fold_rope")
        if folds:  # the folded RoPE at any batch size, to compare with the plain one
            switch_setter(reference, "fold_rope")(True)
        state = {k: v.clone() for k, v in reference.state_dict().items()}
        expected = probabilities(reference, data)
        variants = []
        if name == "InterFormer":  # the default groups rows by history length (CPU)
            variants.append(("cpu padded batch (skip_padding: false)", "cpu", dict(skip_padding=False), FP32_TOL))
        if folds:  # RoPE folded into weights, and our attention kernel (CPU)
            variants.append(("cpu q and k rotated per token (fold_rope off)", "cpu", dict(fold_rope=False),
                             FP32_TOL))
            variants.append(("cpu flash attention (fused_cpu_attention off)", "cpu",
                             dict(fused_cpu_attention=False), FP32_TOL))
        if holders(reference, "fused_cpu_pffn"):  # the PFFN block's kernel (CPU)
            variants.append(("cpu PFFN block op by op (fused_cpu_pffn off)", "cpu", dict(fused_cpu_pffn=False),
                             FP32_TOL))
        if holders(reference, "fused_cpu_pool"):  # PMA's pooling kernel (CPU)
            variants.append(("cpu PMA pooling op by op (fused_cpu_pool off)", "cpu", dict(fused_cpu_pool=False),
                             FP32_TOL))
        if args.compile:
            variants.append(("cpu torch.compile", "cpu", dict(torch_compile=True), FP32_TOL))
        if args.device == "cuda":
            variants += [("cuda fp32", "cuda", {}, FP32_TOL), ("cuda bf16 autocast", "cuda",
                         dict(mixed_precision="bf16"), BF16_TOL)]
            if args.compile:
                variants.append(("cuda torch.compile", "cuda", dict(torch_compile=True), FP32_TOL))
        for label, device, switches, tol in variants:
            switches = dict(switches)
            attributes = {a: switches.pop(a) for a in ("fold_rope", "fused_cpu_attention", "fused_cpu_pffn", "fused_cpu_pool")
                          if a in switches}
            model = build(name, fmap, device, **switches)  # the rest are model keys
            for attribute, on in attributes.items():  # module attributes
                switch_setter(model, attribute)(on)
            model.load_state_dict(state)
            ok &= compare(label, expected, probabilities(model, data), tol)
        # A training step with fused Adam against the plain Adam, from the same weights.
        plain = build(name, fmap, "cpu", fused_optimizer=False)
        plain.load_state_dict(state)
        fused = build(name, fmap, "cpu")
        fused.load_state_dict(state)
        for model in (plain, fused):
            model.train()
            model.train_step(data)
        ok &= compare("cpu fused Adam step vs plain Adam step", probabilities(plain, data),
                      probabilities(fused, data), FP32_TOL)
    print("agreement: " + ("all paths agree" if ok else "MISMATCH"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
