"""Batch scoring over short windows: rows sorted by history length, each batch cut to the
positions its rows use.

A served graph computes every position it is given, padding included: a batch of histories
padded to 100 slots costs 100 positions a row even when most rows hold a few items. The
models of this package ignore padded positions (masked attention and pooling, RoPE over
ranks, mask-aware PMA and recent tokens), so a row scores the same over any window of
columns that holds all its valid positions. Sorting a chunk's rows by their span and cutting
each batch to the union of its rows' windows keeps the padding a batch computes small, on any
backend and device (the graphs take a dynamic sequence length). A model that reads positions
(a learned position embedding, say) would not score the same: :func:`windows_agree` checks a
scorer on a crafted batch first, and the caller keeps full windows when it disagrees.
"""
import logging
from typing import Callable, List, Sequence, Tuple

import torch

from .layers.grouping import valid_window

TOLERANCE = 1e-5
MIN_WIDTH = 2  # the exported graphs take sequence lengths >= 2 (torch.export specialises 0 and 1)


def sequence_slots(inputs: Sequence[torch.Tensor]) -> List[List[int]]:
    """Indices of the ``[B, T]`` inputs, grouped by ``T`` (fields of one length share a window)."""
    slots = {}
    for i, x in enumerate(inputs):
        if x.dim() == 2:
            slots.setdefault(x.shape[1], []).append(i)
    return list(slots.values())


def row_windows(inputs: Sequence[torch.Tensor], slots: List[List[int]]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Per slot group, each row's ``(first, end)`` valid columns ``[B]`` over the group's fields
    (padding id 0); an empty row's ``(T, 0)`` moves no window."""
    return [valid_window(torch.stack([inputs[i] != 0 for i in group]).any(0)) for group in slots]


def bucketed_batches(inputs: Sequence[torch.Tensor], batch_size: int):
    """``(rows, batch)`` pairs covering every row once: rows in order of their total span,
    ``batch`` the inputs of those rows with each sequence cut to the rows' common window.

    Args:
        inputs: the serving inputs (:func:`interformer_fuxi.serving.batch_inputs`), ``[B]`` or
            ``[B, T]`` each.
        batch_size (int): rows per batch.

    Example::

        >>> ids = torch.tensor([[0, 0, 0, 7], [0, 5, 6, 7], [0, 0, 8, 9]])
        >>> [(rows.tolist(), b[0].tolist()) for rows, b in bucketed_batches((ids,), 2)]
        [([0, 2], [[0, 7], [8, 9]]), ([1], [[5, 6, 7]])]
    """
    slots = sequence_slots(inputs)
    windows = row_windows(inputs, slots)
    B = inputs[0].shape[0]
    span = sum((end - first).clamp(min=0) for first, end in windows) if windows else torch.zeros(B)
    order = torch.sort(span, stable=True).indices
    for rows in order.split(batch_size):
        cut = list(inputs)
        for group, (first, end) in zip(slots, windows):
            T = inputs[group[0]].shape[1]
            hi = int(end[rows].max())
            lo = min(int(first[rows].min()), hi)
            hi = min(T, max(hi, lo + MIN_WIDTH))
            lo = max(0, min(lo, hi - MIN_WIDTH))
            for i in group:
                cut[i] = inputs[i][:, lo:hi]
        yield rows, tuple(x[rows] for x in cut)


def score_bucketed(score: Callable, inputs: Sequence[torch.Tensor], batch_size: int) -> torch.Tensor:
    """``score`` over :func:`bucketed_batches`, put back in input order: ``[B]``."""
    out = torch.empty(inputs[0].shape[0], dtype=torch.float32)
    for rows, batch in bucketed_batches(inputs, batch_size):
        out[rows] = score(batch).float().reshape(-1).cpu()
    return out


def probe_inputs(example: Sequence[torch.Tensor], seed: int = 0) -> Tuple[torch.Tensor, ...]:
    """``example`` (random valid inputs of 16+ rows) with histories of many lengths, pre- and
    post-padded, one empty: the rows whose windows differ most."""
    generator = torch.Generator().manual_seed(seed)
    probe = [x.clone() for x in example]
    for group in sequence_slots(probe):
        B, T = probe[group[0]].shape
        lengths = torch.randint(1, T + 1, (B,), generator=generator)
        lengths[0] = 0
        lengths[1] = T
        pos = torch.arange(T)
        post = torch.rand(B, generator=generator) < 0.5
        valid = torch.where(post[:, None], pos < lengths[:, None], pos >= T - lengths[:, None])
        for i in group:
            probe[i] = probe[i].masked_fill(~valid, 0)
    return tuple(probe)


def windows_agree(score: Callable, example: Sequence[torch.Tensor], name: str = "model") -> bool:
    """Whether ``score`` gives the same scores (within 1e-5) over cut windows as over full
    ones, on :func:`probe_inputs` of ``example``; logs why not."""
    probe = probe_inputs(example)
    if not sequence_slots(probe):
        return False  # nothing to cut
    with torch.no_grad():
        full = score(probe).float().reshape(-1).cpu()
        try:
            # alone, each row over its own window; in fours, over its neighbours' union
            cut = [score_bucketed(score, probe, batch_size=n) for n in (1, 4)]
        except Exception as exc:  # a graph that does not take shorter sequences
            logging.warning("%s: scores every padded position (a shorter window fails: %s)", name,
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return False
    gap = max(float((c - full).abs().max()) for c in cut)
    if not gap <= TOLERANCE:
        logging.info("%s: scores every padded position (it reads positions: %.1e apart over a shorter window)",
                     name, gap)
        return False
    return True
