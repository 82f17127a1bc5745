"""One CPU fast path of InterFormer on and off, step by step in one process: its paired effect.

    python benchmarks/switch_ab.py --switch fold_rope            # RoPE folded into per-column weights
    python benchmarks/switch_ab.py --switch fused_cpu_attention  # the C++ attention kernel
    python benchmarks/switch_ab.py --switch pool_backward_by_hand   # PMA's pooling, backward by hand
    python benchmarks/switch_ab.py --switch low_rank_product        # PFFN as (S X_sum^T) W
    python benchmarks/switch_ab.py --switch fused_cpu_pffn          # the pre-norm PFFN block in C++
    python benchmarks/switch_ab.py --switch fused_cpu_pool          # PMA's pooling in C++
    python benchmarks/switch_ab.py --switch skip_padding --lengths amazon
    python benchmarks/switch_ab.py --switch dedup_sequence_tokens
    python benchmarks/switch_ab.py --switch fold_rope --batch 1 --eval   # single-row predictions

This machine's speed drifts by 10-25% from minute to minute, more than most single changes
are worth, so two runs of a whole benchmark cannot tell them apart. Here one model (the
``InterFormer_default`` expid, the synthetic AmazonElectronics_x1-scale batch of
``throughput.py``) trains with the switch on and off in turns, step by step, the order
alternating between rounds. Each pair of neighbouring steps sees nearly the same machine, so
the median of the paired differences is what the switch is worth. The weights keep training
across the steps (as in a run); the switches change the speed, not the result. ``fold_rope``
on folds at any batch size (by default InterFormer folds from 512 rows, where it pays).
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import CATEGORY_MODES, LENGTH_PROFILES, amazon_feature_map, build, make_batches  # noqa: E402
from interformer_fuxi.cpu_heap import keep_freed_memory  # noqa: E402


def holders(model, attribute):
    """The modules of ``model`` (itself included) that carry ``attribute``."""
    return [m for m in model.modules() if hasattr(m, attribute)]


def switch_setter(model, name):
    """A function that turns the named fast path on (True) or off (False) in ``model``."""
    if name not in SWITCHES:
        raise ValueError(f"unknown switch {name!r}")
    if name == "dedup_sequence_tokens":  # a table of radices, None when off
        radix = model.feature_arch.dedup_radix
        return lambda on: setattr(model.feature_arch, "dedup_radix", radix if on else None)
    modules = holders(model, name)  # a boolean attribute: the others

    def turn(on):
        for m in modules:
            setattr(m, name, on)
            if name == "fold_rope":
                m.fold_min_rows = 1  # "on" folds at any batch size, to measure where it pays
    return turn


SWITCHES = ["fold_rope", "fused_cpu_attention", "pool_backward_by_hand", "low_rank_product", "skip_padding",
            "dedup_sequence_tokens", "fused_cpu_pffn", "fused_cpu_pool"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switch", required=True, choices=SWITCHES)
    parser.add_argument("--rounds", type=int, default=16, help="pairs of steps timed")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--T", type=int, default=100)
    parser.add_argument("--lengths", default="full", choices=list(LENGTH_PROFILES))
    parser.add_argument("--categories", default="item", choices=list(CATEGORY_MODES))
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps per setting")
    parser.add_argument("--eval", action="store_true",
                        help="time predictions (eval mode, no gradients) instead of training steps")
    args = parser.parse_args(argv)
    keep_freed_memory()
    fmap = amazon_feature_map(args.T)
    model = build("InterFormer", fmap, "cpu")
    data = make_batches(fmap, args.batch, 1, "cpu", args.lengths, args.categories)[0]
    turn = switch_setter(model, args.switch)
    if args.eval:
        model.eval()
        step = torch.no_grad()(model.predict_batch)
    else:
        step = model.train_step
    for i in range(args.warmup * 2):
        turn(i % 2 == 0)
        step(data)
    times = {True: [], False: []}
    for r in range(args.rounds):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            turn(on)
            start = time.perf_counter()
            step(data)
            times[on].append(time.perf_counter() - start)
    turn(True)
    diffs = [a - b for a, b in zip(times[True], times[False])]
    on_ms, off_ms = (1e3 * statistics.median(times[k]) for k in (True, False))
    what = "prediction" if args.eval else "training step"
    print(f"InterFormer, batch {args.batch}, T={args.T}, histories {args.lengths}, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds of one {what} each way")
    print(f"  {args.switch} on : median {on_ms:8.2f} ms per {what}")
    print(f"  {args.switch} off: median {off_ms:8.2f} ms per {what}")
    print(f"  paired difference (on - off): median {1e3 * statistics.median(diffs):+.2f} ms, "
          f"on faster in {sum(d < 0 for d in diffs)} of {len(diffs)} pairs")
    print(f"RESULT switch={args.switch} on_ms={on_ms:.2f} off_ms={off_ms:.2f} "
          f"paired_diff_ms={1e3 * statistics.median(diffs):.2f}")


if __name__ == "__main__":
    main()
