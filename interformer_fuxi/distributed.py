"""Data-parallel training under ``torchrun``: PyTorch's DDP, one process per device.

``torchrun --nproc_per_node 4 run_expid.py --expid X --gpu 0 1 2 3`` starts four ranks; rank
``r`` of node-local rank ``l`` trains on ``cuda:<gpu[l]>`` with NCCL (``--gpu -1``: the CPU
with gloo). The rules every rank follows:

* **Batches.** ``batch_size`` is the *global* batch. Every epoch, all ranks draw the same
  seeded permutation of the training rows (seed + epoch), cut it into global batches and
  rank ``r`` takes the ``r``-th of ``world_size`` near-equal slices of each: every row once
  per epoch, on one rank. One process with the same seed and ``batch_size`` sees the same
  global batches, so the learning rate needs no scaling rule: keep the one tuned for that
  global batch.
* **Gradient.** DDP averages the ranks' gradients. Each rank's loss is weighted by
  ``rows on this rank * world_size / rows in the global batch``, so the average is the mean
  loss of the global batch even when a last batch splits unevenly.
* **Metrics.** Each rank scores a contiguous slice of the validation/test rows; rank 0
  gathers predictions, labels and gAUC groups in row order, computes the metrics once and
  broadcasts them, so early stopping and learning-rate decay are decided once.
* **Files.** Only rank 0 writes logs, checkpoints, the resumable state and the result line;
  at the end it reloads the best checkpoint and broadcasts it to the other ranks.
* **Failures.** A rank that raises exits non-zero with its ``error:`` line; torchrun's agent
  then stops the other ranks (no hang in a collective).
"""
import datetime
import os

import numpy as np
import torch
import torch.distributed as dist

from .errors import UserError

BUILD_TIMEOUT = datetime.timedelta(hours=6)  # rank 0 may build a 22M-row dataset while others wait


def launched():
    """True in a process started by ``torchrun`` (it sets ``LOCAL_RANK`` and ``WORLD_SIZE``)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def active():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if active() else 0


def world_size():
    return dist.get_world_size() if active() else 1


def is_main():
    return rank() == 0


def device_of(gpus):
    """The GPU index of this process: ``gpus[LOCAL_RANK]`` under torchrun, else ``gpus[0]``."""
    gpus = list(gpus) if isinstance(gpus, (list, tuple)) else [gpus]
    if not launched():
        if len(gpus) > 1:
            raise UserError(f"--gpu {' '.join(map(str, gpus))}: several devices need one process each: "
                            f"torchrun --nproc_per_node {len(gpus)} run_expid.py ... --gpu "
                            f"{' '.join(map(str, gpus))}")
        return gpus[0]
    local_rank, local_size = int(os.environ["LOCAL_RANK"]), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if gpus == [-1]:
        return -1
    if len(gpus) != local_size:
        raise UserError(f"--gpu {' '.join(map(str, gpus))}: torchrun started {local_size} process(es) on this "
                        f"node; give one GPU id each (e.g. --gpu {' '.join(map(str, range(local_size)))}) "
                        "or -1 for the CPU")
    return gpus[local_rank]


def init(gpu):
    """Join the process group of a torchrun job (NCCL on CUDA, gloo on the CPU); a no-op when
    the process was not started by torchrun. ``gpu``: this process's device, ``-1`` the CPU."""
    if not launched() or active():
        return
    use_cuda = gpu >= 0 and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(gpu)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=BUILD_TIMEOUT)


def close():
    if active():
        dist.destroy_process_group()


def barrier():
    if active():
        dist.barrier()


def broadcast(obj):
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_module(module):
    """Rank 0's parameters and buffers into every rank's ``module``, in place."""
    if active():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def gather_rows(array):
    """On rank 0, every rank's 1-d ``array`` concatenated in rank order; None on the others."""
    if not active():
        return array
    parts = [None] * world_size() if is_main() else None
    dist.gather_object(np.ascontiguousarray(array), parts, dst=0)
    return np.concatenate(parts) if is_main() else None


def all_sum(values):
    """The elementwise sum over ranks of a list of floats."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def shard_bounds(num_rows, world, r):
    """Rows ``[start, stop)`` of rank ``r``: ``world`` contiguous, near-equal slices."""
    return num_rows * r // world, num_rows * (r + 1) // world


class ShardedBatches:
    """Rank ``r``'s slice of every global batch of an in-memory data tensor.

    Args:
        darray: ``[N, C]`` tensor, FuxiCTR's column layout (features then labels).
        batch_size: the global batch.
        shuffle: draw a new seeded permutation every epoch (``set_epoch``).
    Yields ``(batch [b_r, C], weight)``: ``weight = b_r * world / b`` for the loss (see the module).
    A rank whose slice of a last, small batch is empty gets one row with weight 0, so that
    every rank takes part in every gradient reduction.
    """

    def __init__(self, darray, batch_size, world, rank_, shuffle=True, seed=2019):
        self.darray, self.batch_size, self.world, self.rank = darray, batch_size, world, rank_
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.num_samples = len(darray)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return -(-self.num_samples // self.batch_size)

    def global_order(self):
        if not self.shuffle:
            return torch.arange(self.num_samples)
        return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + self.epoch))

    def indices(self):
        """The row indices of this rank, one tensor per step."""
        order = self.global_order()
        for start in range(0, self.num_samples, self.batch_size):
            rows = order[start:start + self.batch_size]
            lo, hi = shard_bounds(len(rows), self.world, self.rank)
            yield rows[lo:hi] if hi > lo else rows[:1], (hi - lo) * self.world / len(rows)

    def __iter__(self):
        for rows, weight in self.indices():
            yield self.darray[rows], weight


class ShardedRows:
    """Rank ``r``'s contiguous slice of an evaluation split, in batches (for :func:`gather_rows`)."""

    def __init__(self, darray, batch_size, world, rank_):
        lo, hi = shard_bounds(len(darray), world, rank_)
        self.darray, self.batch_size = darray[lo:hi], batch_size
        self.num_samples = hi - lo

    def __len__(self):
        return -(-self.num_samples // self.batch_size)

    def __iter__(self):
        for start in range(0, self.num_samples, self.batch_size):
            yield self.darray[start:start + self.batch_size]


def read_rows(path, columns, lo, hi):
    """Rows ``[lo, hi)`` of an H5 block as FuxiCTR's ``[n, C]`` data tensor (only those rows are read)."""
    import h5py

    with h5py.File(path, "r") as hf:
        arrays = [hf[c][lo:hi] for c in columns]
    return torch.from_numpy(np.hstack([a.reshape(-1, 1) if a.ndim == 1 else a for a in arrays]))


def block_rows(path, label):
    import h5py

    with h5py.File(path, "r") as hf:
        return len(hf[label])


def part_sizes(n, parts):
    """The sizes of ``torch.tensor_split(range(n), parts)``."""
    return [n // parts + (1 if j < n % parts else 0) for j in range(parts)]


class ShardedBlocks:
    """Rank ``r``'s share of H5 block data (``data_block_size``), one block in memory at a time.

    Every epoch all ranks draw the same seeded block order. Of each block of ``n`` rows, rank
    ``r`` reads only its contiguous slice (:func:`shard_bounds`), shuffles it (seeded) and cuts it
    into ``ceil(n / batch_size)`` local batches, so every rank takes the same number of steps
    and every row is read once per epoch (a global step has ``batch_size`` rows up to rounding,
    at most ``world - 1`` more). Yields ``(batch, weight)`` as :class:`ShardedBatches`.
    """

    def __init__(self, blocks, columns, label, batch_size, world, rank_, shuffle=True, seed=2019):
        self.blocks, self.columns, self.batch_size = list(blocks), columns, batch_size
        self.world, self.rank, self.shuffle, self.seed, self.epoch = world, rank_, shuffle, seed, 0
        self.rows = [block_rows(b, label) for b in self.blocks]
        self.num_samples = sum(self.rows)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return sum(-(-n // self.batch_size) for n in self.rows)

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.blocks), generator=gen) if self.shuffle else torch.arange(len(self.blocks))
        for b in order.tolist():
            n, steps = self.rows[b], -(-self.rows[b] // self.batch_size)
            bounds = [shard_bounds(n, self.world, r) for r in range(self.world)]
            sizes = [part_sizes(hi - lo, steps) for lo, hi in bounds]  # every rank's local batch sizes
            lo, hi = bounds[self.rank]
            data = read_rows(self.blocks[b], self.columns, lo, hi) if hi > lo else \
                read_rows(self.blocks[b], self.columns, 0, 1)  # a placeholder row, weight 0
            local = torch.randperm(hi - lo, generator=gen) if self.shuffle else torch.arange(hi - lo)
            for j, rows in enumerate(torch.tensor_split(local, steps)):
                total = sum(s[j] for s in sizes)
                yield (data[rows], len(rows) * self.world / total) if len(rows) else (data[:1], 0.0)


class ShardedBlockRows:
    """Rank ``r``'s contiguous slice of every block of an evaluation split, in batches."""

    def __init__(self, blocks, columns, label, batch_size, world, rank_):
        self.blocks, self.columns, self.batch_size = blocks, columns, batch_size
        self.bounds = [shard_bounds(block_rows(b, label), world, rank_) for b in blocks]
        self.num_samples = sum(hi - lo for lo, hi in self.bounds)

    def __len__(self):
        return sum(-(-(hi - lo) // self.batch_size) for lo, hi in self.bounds)

    def __iter__(self):
        for block, (lo, hi) in zip(self.blocks, self.bounds):
            for start in range(lo, hi, self.batch_size):
                yield read_rows(block, self.columns, start, min(start + self.batch_size, hi))


def shard_loaders(train_gen, *eval_gens, seed=2019):
    """This rank's views of FuxiCTR's loaders: for in-memory splits (``.dataset.darray``) the
    training loader's global batches and the evaluation loaders' row slices; for H5 block data
    (``H5BlockDataLoader``) the same per block, reading only this rank's rows. None stays None."""
    world, r = world_size(), rank()

    def columns(gen):
        return list(gen.feature_map.features) + gen.feature_map.labels

    def darray(gen):
        return getattr(getattr(gen, "dataset", None), "darray", None)

    train = None
    if train_gen is not None and darray(train_gen) is not None:
        train = ShardedBatches(darray(train_gen), train_gen.batch_size, world, r, shuffle=_shuffles(train_gen),
                               seed=seed)
    elif train_gen is not None:
        train = ShardedBlocks(train_gen.data_blocks, columns(train_gen), train_gen.feature_map.labels[0],
                              train_gen.batch_size, world, r, shuffle=train_gen.shuffle, seed=seed)

    def shard_eval(gen):
        if gen is None:
            return None
        if darray(gen) is not None:
            return ShardedRows(darray(gen), gen.batch_size, world, r)
        return ShardedBlockRows(gen.data_blocks, columns(gen), gen.feature_map.labels[0], gen.batch_size, world, r)

    return (train, *map(shard_eval, eval_gens))


def _shuffles(loader):
    return isinstance(getattr(loader, "sampler", None), torch.utils.data.RandomSampler)
