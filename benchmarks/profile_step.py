"""Where a model's training step spends its time: torch.profiler over a few steps, by op.

    python benchmarks/profile_step.py                                 # InterFormer, CPU, batch 1024
    python benchmarks/profile_step.py --device cuda --batch 2048 [--bf16] [--compile]

Same models and synthetic AmazonElectronics_x1-scale data as ``throughput.py``. After
``--warmup`` steps (long enough for the CPU heap to stop growing, and for a compile), it
profiles ``--steps`` training steps and prints the ops that took the most time on the
device (CUDA kernels' time on a GPU; self CPU time on the CPU), with their share of the total,
and how many ops one step dispatches (each one a kernel launch or more on a GPU, where a step
of many small ops is bound by the host).
"""
import argparse
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import CATEGORY_MODES, LENGTH_PROFILES, MODELS, amazon_feature_map, build, make_batches  # noqa: E402
from interformer_fuxi.cpu_heap import keep_freed_memory  # noqa: E402


class OpCount(TorchDispatchMode):
    """Counts the aten ops that reach the dispatcher (views included)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="InterFormer", choices=list(MODELS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--T", type=int, default=100)
    parser.add_argument("--lengths", default="full", choices=list(LENGTH_PROFILES),
                        help="how full the histories are (throughput.py's profiles)")
    parser.add_argument("--categories", default="item", choices=list(CATEGORY_MODES),
                        help="how categories relate to items (throughput.py's modes)")
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE")
    parser.add_argument("--rows", type=int, default=25, help="ops to print")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.device == "cpu":
        keep_freed_memory()
    fmap = amazon_feature_map(args.T)
    model = build(args.model, fmap, args.device, mixed_precision="bf16" if args.bf16 else None,
                  torch_compile=args.compile)
    data = make_batches(fmap, args.batch, 1, args.device, args.lengths, args.categories)[0]
    for _ in range(args.warmup):
        model.train_step(data)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    if args.device == "cuda":
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            model.train_step(data)
        if args.device == "cuda":
            torch.cuda.synchronize()
    with OpCount() as ops:
        model.train_step(data)
    events = prof.key_averages()
    if args.device == "cuda":  # the kernels alone: an op's device time is its kernels' time again
        events = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    key = "self_device_time_total" if args.device == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, key) for e in events)
    histories = "" if args.lengths == "full" else f", histories {args.lengths}"
    print(f"{args.model}, batch {args.batch}, T={args.T}{histories}, {args.device}"
          f"{', bf16' if args.bf16 else ''}{', compiled' if args.compile else ''}: "
          f"{total / args.steps / 1e3:.1f} ms of {'kernel' if args.device == 'cuda' else 'op'} time "
          f"per step, "
          f"{ops.count:,} ops dispatched per step")
    for e in sorted(events, key=lambda e: -getattr(e, key))[:args.rows]:
        t = getattr(e, key)
        print(f"{100 * t / total:5.1f}%  {t / args.steps / 1e3:8.2f} ms/step  "
              f"x{e.count // args.steps:<4d} {e.key[:110]}")


if __name__ == "__main__":
    main()
