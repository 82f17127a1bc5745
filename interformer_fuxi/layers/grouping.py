"""Rows grouped by history length, each group with the window of positions its rows use.

Real histories are mostly padding (a BARS AmazonElectronics_x1 row holds a few of its 100
slots). Everything InterFormer does after the Feature Arch is per row and ignores padded
positions (masked keys, mask-aware PMA and recent tokens, ranks for RoPE), so a row gives
the same result over any window of columns that holds all its valid positions. Grouping
rows of similar length lets each group run over a short window.
"""
from typing import List, Optional, Tuple

import torch

# Cost of one row over a window of N tokens (CLS included), in units of one token's
# position-wise work: ``ROW_FIXED + N + N^2 / QUADRATIC_N``; one more group costs GROUP_COST
# (every op dispatched again, forward and backward). Read off InterFormer_default's CPU
# profile (``python benchmarks/profile_step.py``): at batch 1024 and N = 104 attention is ~27%
# of the step and per-row work (Interaction Arch, head) ~8%, the rest is position-wise; a step
# of a handful of rows (``--batch 8 --T 2``) counts ~28 ms of op time, ~20 ms of it outside
# Adam and the embedding gradients: the work of ~11 rows at N = 104.
ROW_FIXED = 13.0
QUADRATIC_N = 250.0
GROUP_COST = 1800.0


def _bounds(T: int) -> List[int]:
    """Candidate window widths about sqrt(2) apart: 1, 2, 3, 4, 6, 8, 12, 16, ... below T, then T."""
    candidates = {1} | {m << s for s in range(T.bit_length()) for m in (2, 3)}
    return sorted(b for b in candidates if b < T) + [T]


def _row_cost(width: int, extra_tokens: int) -> float:
    n = width + extra_tokens
    return ROW_FIXED + n + n * n / QUADRATIC_N


def valid_window(mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each row's first valid column and last valid column + 1, ``[B]`` each, from a ``[B, T]``
    bool mask; an empty row gets ``(T, 0)``, which moves no window it joins."""
    T = mask.shape[1]
    has_valid = mask.any(1)
    first = torch.where(has_valid, mask.int().argmax(1), T)
    end = torch.where(has_valid, T - mask.flip(1).int().argmax(1), 0)
    return first, end


def length_groups(mask: torch.Tensor, extra_tokens: int = 0
                  ) -> List[Tuple[Optional[torch.Tensor], int, int]]:
    """Partition of the rows into groups, each with the columns ``[lo, hi)`` it needs.

    A row needs the columns from its first to its last valid position (one column when it
    has none). Rows are first binned by that span into widths ~sqrt(2) apart; a dynamic
    program then merges neighbouring bins where the saved per-group dispatch outweighs the
    extra padded work (cost model above, ``extra_tokens`` = tokens every row adds, e.g.
    CLS). The host reads a few small tensors: cheap on the CPU, a sync on a GPU.

    Args:
        mask: ``[B, T]`` bool, True = valid position.
        extra_tokens (int): tokens added to every row's window by the caller.

    Returns:
        ``[(rows, lo, hi), ...]``: ``rows`` a ``[R]`` long tensor of row indices (each row in
        exactly one group), or ``None`` for a single group holding every row in order.

    Example::

        >>> mask = torch.arange(100).unsqueeze(0) < torch.tensor([[3]] * 1000 + [[100]] * 24)
        >>> [(None if r is None else len(r), lo, hi) for r, lo, hi in length_groups(mask)]
        [(1000, 0, 3), (24, 0, 100)]
    """
    B, T = mask.shape
    # an empty row fits any window: it bins as span 1 and does not move its group's window
    first, end = valid_window(mask.bool())
    span = (end - first).clamp(min=1)
    bounds = _bounds(T)
    bins = torch.bucketize(span, torch.tensor(bounds, device=span.device))  # first bound >= span
    counts = torch.bincount(bins, minlength=len(bounds)).tolist()
    widths = torch.zeros(len(bounds), dtype=span.dtype, device=span.device).scatter_reduce(
        0, bins, span, "amax").tolist()
    used = [i for i, c in enumerate(counts) if c]
    # best[j]: cost of the used bins up to j; a group is a run of used bins, window = last one's
    best, cut = [0.0], []
    for j in range(len(used)):
        rows, options = 0, []
        for i in range(j, -1, -1):
            rows += counts[used[i]]
            options.append((best[i] + GROUP_COST + rows * _row_cost(widths[used[j]], extra_tokens), i))
        cost, start = min(options)
        best.append(cost)
        cut.append(start)
    runs, j = [], len(used)
    while j > 0:
        runs.append((cut[j - 1], j))
        j = cut[j - 1]
    runs.reverse()
    if len(runs) == 1:
        return [(None, *_window(first, end))]
    group_of_bin = torch.zeros(len(bounds), dtype=torch.long, device=mask.device)
    for g, (i, j) in enumerate(runs):
        group_of_bin[[used[k] for k in range(i, j)]] = g
    group = group_of_bin[bins]
    order = torch.argsort(group, stable=True)
    sizes = torch.bincount(group, minlength=len(runs)).tolist()
    return [(rows, *_window(first[rows], end[rows])) for rows in order.split(sizes)]


def _window(first: torch.Tensor, end: torch.Tensor) -> Tuple[int, int]:
    """The columns holding every row's valid positions; one column when no row has any."""
    lo, hi = int(first.min()), int(end.max())
    return (lo, hi) if lo < hi else (0, 1)
