"""CUDA-compiled InterFormer against the eager CPU model, on the same weights (on a CUDA machine).

    python benchmarks/compile_agreement.py

Compiles InterFormer_default on CUDA with ``torch_compile: true`` and ``reduce-overhead``
(CUDA graphs) and compares its click probabilities on one batch of 256 (a quarter of them
with empty histories) with the eager CPU model's: fp32 within 1e-4. No CPU compile, so it
runs in about a minute.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agreement import FP32_TOL, check_batch, compare, probabilities  # noqa: E402
from throughput import amazon_feature_map, build  # noqa: E402


def main():
    if not torch.cuda.is_available():
        sys.exit("compile_agreement.py: needs a CUDA device")
    fmap = amazon_feature_map(100)
    data = check_batch(fmap, 256)
    reference = build("InterFormer", fmap, "cpu")
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    expected = probabilities(reference, data)
    ok = True
    for mode in (True, "reduce-overhead"):
        model = build("InterFormer", fmap, "cuda", torch_compile=mode)
        model.load_state_dict(state)
        ok &= compare(f"cuda torch.compile ({mode}) vs cpu eager", expected, probabilities(model, data), FP32_TOL)
    print("compiled agreement:", "ok" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
