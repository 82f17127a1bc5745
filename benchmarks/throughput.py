"""Training and serving throughput of InterFormer against DIN, TransAct and DHEN, side by side.

    python benchmarks/throughput.py --quick            # InterFormer vs DIN, batch 1024, T=100 (< 2 min)
    python benchmarks/throughput.py                    # everything, tables for docs/performance.md
    python benchmarks/throughput.py --device cuda [--bf16] [--compile [reduce-overhead]]

One process measures, on the same synthetic AmazonElectronics_x1-scale data (item and
category vocabularies of the dataset, item ids drawn uniformly, each item with one category as
in the dataset (``--categories independent``: category ids drawn on their own), histories of
length T sharing those tables; by default every history full, so all models do their
worst-case work) and the same batch size:

- training samples/s (forward, loss, backward, gradient clipping and the Adam step, as
  FuxiCTR's ``train_step``), with data loading excluded (batches already in memory) and
  included (FuxiCTR's ``H5DataLoader`` over an H5 file of the same rows);
- evaluation samples/s and single-row latency p50/p99; peak memory of the training step
  (on CPU: the growth of the resident memory of a fresh process with glibc's default heap,
  where freed tensors go back to the system, so the growth is the step's live peak; on
  CUDA: ``max_memory_allocated``);
- model FLOPs per sample (``torch.utils.flop_counter``, with the CPU flash-attention
  kernels counted too), the achieved FLOP/s and its fraction of the fp32 matmul peak
  measured in the same run (a large square ``mm``: what this machine's BLAS reaches);
- the H5 loader alone, and (full mode) cost against T and against the number of rows;
- InterFormer against DIN when histories are not full (``LENGTH_PROFILES``): InterFormer
  skips padding on the CPU, DIN (as FuxiCTR runs it) computes every slot. ``--quick`` adds the
  ``amazon`` profile (``full`` with ``--lengths amazon``), the full mode every other profile.

The models are the project's expids with the paper's / BARS's settings: InterFormer_default,
DIN_default (BARS's AmazonElectronics_x1 DIN: attention [512, 256], DNN [1024, 512, 256],
d = 64), TransAct_default and DHEN_default. ``--model_zoo`` swaps in FuxiCTR's own DIN.
The last line is ``RESULT interformer_train_sps=… din_train_sps=… speedup=… flop_util=…
loader_ratio=…``.
"""
import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from interformer_fuxi.config import load_model_config_section  # noqa: E402
from interformer_fuxi.cpu_heap import keep_freed_memory  # noqa: E402
from interformer_fuxi.registry import get_model  # noqa: E402
from synthetic import batch, feature_map  # noqa: E402

AMAZON_VOCAB = {"item_id": 63001 + 2, "cate_id": 801 + 2}  # BARS vocabularies + padding and OOV rows
MODELS = {"InterFormer": "InterFormer_default", "DIN": "DIN_default", "TransAct": "TransAct_default",
          "DHEN": "DHEN_default"}
# BARS's DIN on AmazonElectronics_x1 attends with the item and category embeddings together.
FIELDS = {"DIN": dict(din_target_field=[("item_id", "cate_id")], din_sequence_field=[("item_history", "cate_history")])}


def amazon_feature_map(T):
    fmap = feature_map(sparse=("item_id", "cate_id"),
                       sequences=(("item_history", "item_id"), ("cate_history", "cate_id")), max_len=T)
    for name, size in AMAZON_VOCAB.items():
        fmap.features[name]["vocab_size"] = size
    for name in ("item_history", "cate_history"):
        fmap.features[name]["vocab_size"] = AMAZON_VOCAB[fmap.features[name]["share_embedding"]]
    return fmap


def build(name, fmap, device, model_zoo=None, **switches):
    """The model of ``MODELS[name]`` with its config's settings, plus ``switches`` (e.g. torch_compile)."""
    params = load_model_config_section(os.path.join(REPO, "config"), MODELS[name])
    params.update(FIELDS.get(name, {}))
    params.update(verbose=0, model_root=tempfile.gettempdir(), gpu=0 if device == "cuda" else -1, **switches)
    fmap.default_emb_dim = params.get("embedding_dim")  # as FeatureMap.load sets it (FuxiCTR zoo models read it)
    torch.manual_seed(0)
    model = get_model(params["model"], model_zoo)(fmap, **params)
    model._max_gradient_norm = params.get("max_gradient_norm", 10.0)
    model.train()
    return model


def switches(args):
    return dict(mixed_precision="bf16" if args.bf16 else None, torch_compile=args.compile)


# How full the histories are. ``amazon`` models AmazonElectronics_x1's train rows (DIN's
# construction): a user with n reviews gives the histories of 1 .. n-2 items. Users have at
# least 5 reviews and 8.78 on average (1,689,188 over 192,403); with n - 5 geometric (the
# maximum-entropy law for that mean) a history has k items with a weight P(n >= k + 2) =
# min(1, q^(k-3)), q = 1 - 1/4.78, mean 5.2; longer ones are cut to T. The real activity law
# has a heavier tail, so real histories are somewhat longer; whatever the law, every user
# gives histories of 1, 2 and 3 items, so at least 44% of the rows hold 3 items or fewer.
LENGTH_PROFILES = {"full": "every history holds T items",
                   "uniform": "0..T items, equally often",
                   "amazon": "AmazonElectronics_x1's train rows, modeled"}


def history_lengths(profile, size, T, seed):
    """``[size]`` history lengths drawn from ``LENGTH_PROFILES[profile]``."""
    g = torch.Generator().manual_seed(10_000 + seed)
    if profile == "full":
        return torch.full((size,), T)
    if profile == "uniform":
        return torch.randint(0, T + 1, (size,), generator=g)
    k = torch.arange(1, T + 1000, dtype=torch.float64)  # q^1000 ~ 1e-102: the whole law
    weights = torch.clamp((1 - 1 / 4.78) ** (k - 3), max=1.0)
    return (torch.multinomial(weights, size, replacement=True, generator=g) + 1).clamp(max=T)


def mean_length(profile, size, T, count=2):
    """Mean history length of the batches ``make_batches`` draws."""
    return float(torch.cat([history_lengths(profile, size, T, i) for i in range(count)]).float().mean())


# How the category columns relate to the item columns. In AmazonElectronics_x1 every item has
# one category (the item's metadata), in the target and in the history alike; ``independent``
# draws every category id on its own, as the benchmark did at first.
CATEGORY_MODES = {"item": "each item has one category, as in the dataset",
                  "independent": "category ids drawn independently of the items"}
CATEGORY_OF = {"cate_id": "item_id", "cate_history": "item_history"}  # category column -> its item column


def item_categories(fmap, seed=0):
    """``[item vocabulary]`` the category id of every item id (padding 0 -> 0), drawn uniformly."""
    g = torch.Generator().manual_seed(20_000 + seed)
    table = torch.randint(1, fmap.features["cate_id"]["vocab_size"], (fmap.features["item_id"]["vocab_size"],),
                          generator=g)
    table[0] = 0
    return table


def with_item_categories(fmap, data, table):
    """``data`` with every category column read off its item column through ``table``."""
    data = data.clone()
    for cate, item in CATEGORY_OF.items():
        data[:, fmap.get_column_index(cate)] = table[data[:, fmap.get_column_index(item)].long()].to(data.dtype)
    return data


def make_batches(fmap, size, count, device, profile="full", categories="item"):
    """``count`` synthetic batches of ``size`` rows: uniform item ids, labels at random,
    history lengths from ``LENGTH_PROFILES[profile]``, categories as ``CATEGORY_MODES[categories]``."""
    if categories not in CATEGORY_MODES:
        raise ValueError(f"categories must be one of {list(CATEGORY_MODES)}, got {categories!r}")
    T = fmap.features["item_history"]["max_len"]
    table = item_categories(fmap) if categories == "item" else None
    out = []
    for i in range(count):
        data = batch(fmap, size=size, seed=i, lengths=history_lengths(profile, size, T, i))
        out.append((data if table is None else with_item_categories(fmap, data, table)).to(device))
    return out


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


# --- FLOPs -------------------------------------------------------------------------------------

def _register_missing_flops():
    """Ops missing from torch's FLOP registry, counted like their registered twins:
    the CPU flash-attention kernels and our fused CPU attention like the CUDA ones (2 matmuls
    forward, 4 backward, per head), our fused PFFN block and PMA pooling like the products they
    replace (two forward, four backward), and the in-place ``baddbmm_`` (the backward of RoPE
    folded into per-column weights) like ``baddbmm``."""
    from torch.utils import flop_counter as fc
    from interformer_fuxi.layers.fused_attention import fused_attention_kernel
    from interformer_fuxi.layers.fused_pffn import fused_pffn_kernel
    from interformer_fuxi.layers.fused_seed_pool import fused_seed_pool_kernel
    aten = torch.ops.aten

    def forward(query, key, value, *args, **kwargs):
        return fc.sdpa_flop_count(query.shape, key.shape, value.shape)

    def flash_backward(grad_out, query, key, value, *args, **kwargs):
        return fc.sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)

    def fused_backward(query, key, value, bias, out, lse, grad_out, *args, **kwargs):
        return fc.sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)

    formulas = {aten._scaled_dot_product_flash_attention_for_cpu: forward,
                aten._scaled_dot_product_flash_attention_for_cpu_backward: flash_backward}
    fused = fused_attention_kernel()
    if fused is not None:
        formulas.update({fused.forward: forward, fused.backward: fused_backward})

    def pffn_products(S, X_sum):  # (LN(S) X_sum^T) [B, N, n_sum], then its product with W [n_sum, d]
        B, N, d = S.shape
        return fc.bmm_flop((B, N, d), (B, d, X_sum.shape[1])) + fc.mm_flop((B * N, X_sum.shape[1]), (X_sum.shape[1], d))

    pffn = fused_pffn_kernel()
    if pffn is not None:
        formulas.update({pffn.forward: lambda S, X_sum, *args, **kwargs: pffn_products(S, X_sum),
                         pffn.backward: lambda S, X_sum, *args, **kwargs: 2 * pffn_products(S, X_sum)})

    def pool_products(S, q):  # the scores S q^T [B N, J], then the pooling [B, J, N] x [B, N, d]
        B, N, d = S.shape
        return fc.mm_flop((B * N, d), (d, q.shape[0])) + fc.bmm_flop((B, q.shape[0], N), (B, N, d))

    pool = fused_seed_pool_kernel()
    if pool is not None:
        formulas.update({pool.forward: lambda S, q, *args, **kwargs: pool_products(S, q),
                         pool.backward: lambda S, q, *args, **kwargs: 2 * pool_products(S, q)})
    for op, formula in formulas.items():
        if op not in fc.flop_registry:
            fc.register_flop_formula(op, get_raw=True)(formula)
    if aten.baddbmm_ not in fc.flop_registry:
        @fc.register_flop_formula(aten.baddbmm_, get_raw=True)
        def _baddbmm_(self, batch1, batch2, *args, **kwargs):
            return fc.bmm_flop(batch1.shape, batch2.shape)


def flops_per_sample(model, data):
    """``(train, forward)`` FLOPs per sample of one step on ``data``."""
    from torch.utils.flop_counter import FlopCounterMode
    _register_missing_flops()
    with FlopCounterMode(display=False) as counter:
        model.train_step(data)
    train = counter.get_total_flops()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(data)
    return train / data.shape[0], counter.get_total_flops() / data.shape[0]


def eager_twin(name, fmap, args):
    """Model ``name`` in eager fp32, to count FLOPs on: the count is the model's, whatever runs
    it, and a forward compiled under the counter's dispatch mode would not be compiled at all."""
    return build(name, fmap, args.device, args.model_zoo)


def matmul_peak(device, dtype=torch.float32, n=2048, reps=10):
    """FLOP/s of the best of ``reps`` ``[n, n] @ [n, n]`` products."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


# --- timing ------------------------------------------------------------------------------------

class PeakMemory:
    """Peak memory growth inside the block: CUDA's allocator peak, or the resident set size
    polled every millisecond on CPU (torch's CPU allocations are invisible to tracemalloc)."""

    def __init__(self, device):
        self.device, self.peak = device, 0

    @staticmethod
    def _rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _poll(self):
        while not self._stop.is_set():
            self._max = max(self._max, self._rss())
            time.sleep(0.001)

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._base = self._max = self._rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            self.peak = torch.cuda.max_memory_allocated() - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, self._rss()) - self._base


def _peak_rss_growth(name, size, T, categories):
    """Runs in a fresh process (default glibc heap): RSS growth over two training steps."""
    fmap = amazon_feature_map(T)
    model = build(name, fmap, "cpu")
    batches = make_batches(fmap, size, 1, "cpu", categories=categories)
    with PeakMemory("cpu") as memory:
        model.train_step(batches[0])
        model.train_step(batches[0])
    return memory.peak


def cpu_peak_memory(name, size, T, categories="item"):
    import concurrent.futures
    import multiprocessing
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_peak_rss_growth, name, size, T, categories).result()


def train_sps(model, batches, steps, warmup, device):
    """Samples/s of ``train_step`` over in-memory batches; on CUDA also the steps' peak memory
    (on CPU that comes from a fresh process, :func:`cpu_peak_memory`: no polling thread
    competes with the timed steps)."""
    for i in range(warmup):
        model.train_step(batches[i % len(batches)])
    _sync(device)
    with PeakMemory(device) if device == "cuda" else contextlib.nullcontext() as memory:
        start = time.perf_counter()
        for i in range(steps):
            model.train_step(batches[i % len(batches)])
        _sync(device)
        elapsed = time.perf_counter() - start
    return steps * batches[0].shape[0] / elapsed, memory.peak if memory else float("nan")


def train_sps_with_loader(model, loader, steps, device):
    """Samples/s of ``train_step`` on batches drawn from a FuxiCTR data loader."""
    done, samples = 0, 0
    start = time.perf_counter()
    while done < steps:
        for data in loader:
            model.train_step(data)  # the model moves it to its device
            done, samples = done + 1, samples + data.shape[0]
            if done == steps:
                break
    _sync(device)
    return samples / (time.perf_counter() - start)


@torch.no_grad()
def eval_sps(model, batches, steps, device):
    model.eval()
    model.predict_batch(batches[0])
    _sync(device)
    start = time.perf_counter()
    for i in range(steps):
        model.predict_batch(batches[i % len(batches)])
    _sync(device)
    elapsed = time.perf_counter() - start
    model.train()
    return steps * batches[0].shape[0] / elapsed


@torch.no_grad()
def latency_ms(model, row, reps, device):
    """p50 and p99 of one-row forward passes, in milliseconds."""
    model.eval()
    times = []
    for i in range(reps + 5):
        _sync(device)
        start = time.perf_counter()
        model.predict_batch(row)
        _sync(device)
        if i >= 5:
            times.append((time.perf_counter() - start) * 1000)
    model.train()
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


# --- data loading ------------------------------------------------------------------------------

def write_h5(fmap, rows, path, block=8192, categories="item"):
    """``rows`` synthetic rows (full histories) in FuxiCTR's H5 layout (one dataset per column)."""
    import h5py
    data = torch.cat([batch(fmap, size=min(block, rows - i), seed=1000 + i,
                            lengths=torch.full((min(block, rows - i),), fmap.features["item_history"]["max_len"]))
                      for i in range(0, rows, block)])
    if categories == "item":
        data = with_item_categories(fmap, data, item_categories(fmap))
    columns = list(fmap.features) + fmap.labels
    with h5py.File(path, "w") as f:
        for col in columns:
            index = fmap.get_column_index(col) if col in fmap.features else data.shape[1] - 1
            values = data[:, index].numpy()
            f.create_dataset(col, data=values.astype(np.int64 if fmap.features.get(col, {}).get(
                "type") in ("categorical", "sequence", "meta") else np.float32))
    return path


def fuxictr_loader(fmap, path, batch_size):
    from fuxictr.pytorch.dataloaders.h5_dataloader import DataLoader
    return DataLoader(fmap, path, batch_size=batch_size, shuffle=True, num_workers=0)


def loader_sps(loader, max_batches):
    start, samples = time.perf_counter(), 0
    for i, data in enumerate(loader):
        samples += data.shape[0]
        if i + 1 == max_batches:
            break
    return samples / (time.perf_counter() - start)


# --- report ------------------------------------------------------------------------------------

def table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def interleaved_train_sps(models, batches, args):
    """Median training samples/s of each model over ``args.rounds`` rounds that take turns
    (A, B, A, B, ...), so slow drifts of a shared machine hit every model alike."""
    for model in models.values():
        for i in range(args.warmup):
            model.train_step(batches[i % len(batches)])
    rounds = {name: [] for name in models}
    memory = {}
    for _ in range(args.rounds):
        for name, model in models.items():
            sps, peak = train_sps(model, batches, args.steps, 0, args.device)
            rounds[name].append(sps)
            memory[name] = max(memory.get(name, peak), peak)
    return {name: float(np.median(values)) for name, values in rounds.items()}, rounds, memory


def measure_models(models, fmap, args, peak, h5_path, full):
    out = {name: {"model": name, "params": sum(p.numel() for p in m.parameters() if p.requires_grad),
                  "batches": {}} for name, m in models.items()}
    twins = {name: eager_twin(name, fmap, args) for name in models}
    for size in args.batch:
        batches = make_batches(fmap, size, 2, args.device, args.lengths, args.categories)
        flops = {name: flops_per_sample(twins[name], batches[0]) for name in models}
        sps, rounds, memory = interleaved_train_sps(models, batches, args)
        if args.compile:  # the warm-up steps compiled the forwards: say so, or stop
            from torch._dynamo.utils import counters
            graphs = counters["stats"]["unique_graphs"]
            if not graphs:
                raise SystemExit("--compile: torch.compile compiled no graph; the timings would be eager")
            print(f"  torch.compile: {graphs} graphs compiled so far", flush=True)
        for name, model in models.items():
            train_flops, fwd_flops = flops[name]
            row = {"train_sps": sps[name], "rounds": rounds[name], "peak_mem_mb": memory[name] / 2 ** 20,
                   "train_flops": train_flops, "fwd_flops": fwd_flops, "flops_per_s": sps[name] * train_flops,
                   "flop_util": sps[name] * train_flops / peak}
            if args.device == "cpu" and full:
                row["peak_mem_mb"] = cpu_peak_memory(name, size, args.T, args.categories) / 2 ** 20
            if full:
                loader = fuxictr_loader(fmap, h5_path, size)
                row["train_sps_loader"] = train_sps_with_loader(model, loader, args.steps, args.device)
                row["eval_sps"] = eval_sps(model, batches, args.steps, args.device)
            out[name]["batches"][size] = row
            print(f"  {name} batch {size}: {sps[name]:,.0f} train samples/s (rounds: "
                  f"{', '.join(f'{r:,.0f}' for r in rounds[name])}), {train_flops / 1e6:.1f} MFLOP/sample, "
                  f"{row['flop_util']:.1%} of the matmul peak", flush=True)
    if full:
        row = make_batches(fmap, 1, 1, args.device, categories=args.categories)[0]
        for name, model in models.items():
            out[name]["latency"] = latency_ms(model, row, args.latency_reps, args.device)
    return out


def length_profiles(models, fmap, profiles, args):
    """InterFormer's and DIN's training samples/s at the first batch size for each history
    profile, the models taking turns as above: ``[(profile, mean length, {name: sps})]``."""
    pair = {name: models[name] for name in ("InterFormer", "DIN")}
    out = []
    for profile in profiles:
        batches = make_batches(fmap, args.batch[0], 2, args.device, profile, args.categories)
        mean = mean_length(profile, args.batch[0], args.T)
        sps, rounds, _ = interleaved_train_sps(pair, batches, argparse.Namespace(**{**vars(args), "warmup": 1}))
        out.append((profile, mean, sps))
        print(f"  histories {profile} (mean {mean:.1f} items): InterFormer {sps['InterFormer']:,.0f}, "
              f"DIN {sps['DIN']:,.0f} train samples/s, speedup {sps['InterFormer'] / sps['DIN']:.2f}", flush=True)
    return out


def scaling_in_T(args, peak):
    rows = []
    for T in args.T_sweep:
        fmap = amazon_feature_map(T)
        model = build("InterFormer", fmap, args.device, **switches(args))
        batches = make_batches(fmap, args.batch[0], 1, args.device, categories=args.categories)
        train_flops, _ = flops_per_sample(eager_twin("InterFormer", fmap, args), batches[0])
        sps, _ = train_sps(model, batches, max(2, args.steps // 2), 1, args.device)
        rows.append((T, sps, train_flops))
        print(f"  InterFormer T={T}: {sps:,.0f} samples/s, {train_flops / 1e6:.1f} MFLOP/sample", flush=True)
    return rows


def scaling_in_rows(fmap, args, workdir):
    """Wall time of one pass (loader + training) over N, 2N and 4N rows."""
    model = build("InterFormer", fmap, args.device, **switches(args))
    out = []
    for factor in (1, 2, 4):
        rows = factor * args.rows_base
        path = write_h5(fmap, rows, os.path.join(workdir, f"rows_{rows}.h5"), categories=args.categories)
        loader = fuxictr_loader(fmap, path, args.batch[0])
        start = time.perf_counter()
        for data in loader:
            model.train_step(data.to(args.device))
        _sync(args.device)
        out.append((rows, time.perf_counter() - start))
        print(f"  InterFormer epoch over {rows:,} rows: {out[-1][1]:.1f} s", flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="InterFormer and DIN at the first batch size only")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", nargs="+", type=int, default=None, help="batch sizes (default 1024 2048)")
    parser.add_argument("--T", type=int, default=100, help="history length")
    parser.add_argument("--lengths", default="full", choices=list(LENGTH_PROFILES),
                        help="how full the histories of the main measurement are (default: full)")
    parser.add_argument("--categories", default="item", choices=list(CATEGORY_MODES),
                        help="item: each item has one category, as in AmazonElectronics_x1 (default); "
                             "independent: category ids drawn on their own")
    parser.add_argument("--T_sweep", nargs="+", type=int, default=[50, 100, 200, 500, 1000])
    parser.add_argument("--rows_base", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps first (the CPU heap settles in ~4)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per model (median)")
    parser.add_argument("--latency_reps", type=int, default=200)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                        help="torch.compile the models' forward (optionally with a mode, e.g. reduce-overhead)")
    parser.add_argument("--model_zoo", default=None, help="a FuxiCTR checkout's model_zoo/: use its DIN")
    parser.add_argument("--out", default=None, help="write the Markdown tables here")
    args = parser.parse_args(argv)
    if args.quick:
        args.models = [m for m in args.models if m in ("InterFormer", "DIN")] or ["InterFormer", "DIN"]
        args.batch = args.batch or [1024]
        args.steps = args.steps or 2
    args.batch = args.batch or [1024, 2048]
    args.steps = args.steps or 8
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    for name in ("InterFormer", "DIN"):
        if name not in args.models:
            args.models.insert(0 if name == "InterFormer" else 1, name)

    if args.device == "cpu":
        keep_freed_memory()  # as run_expid.py does for CPU training (interformer_fuxi/cpu_heap.py)
    start = time.perf_counter()
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    mode = "".join([", bf16 autocast" if args.bf16 else "",
                    f", torch.compile ({'default' if args.compile is True else args.compile})" if args.compile else ""])
    print(f"device: {device_name}{mode}; torch {torch.__version__}; batch {args.batch}; T={args.T}", flush=True)
    peak = matmul_peak(args.device)
    print(f"fp32 matmul peak (2048^3 mm): {peak / 1e9:,.1f} GFLOP/s", flush=True)
    if args.device == "cuda":
        bf16_peak = matmul_peak(args.device, torch.bfloat16, n=8192)
        print(f"bf16 matmul peak (8192^3 mm): {bf16_peak / 1e12:,.1f} TFLOP/s", flush=True)
        peak = bf16_peak if args.bf16 else peak

    fmap = amazon_feature_map(args.T)
    full = not args.quick
    with tempfile.TemporaryDirectory() as workdir:
        h5_path = write_h5(fmap, max(args.batch) * (args.steps + 2), os.path.join(workdir, "train.h5"),
                           categories=args.categories)
        loader_rate = loader_sps(fuxictr_loader(fmap, h5_path, args.batch[0]), args.steps + 2)
        print(f"FuxiCTR H5DataLoader alone, batch {args.batch[0]}: {loader_rate:,.0f} samples/s", flush=True)
        models = {name: build(name, fmap, args.device, args.model_zoo, **switches(args)) for name in args.models}
        results = measure_models(models, fmap, args, peak, h5_path, full)
        others = [p for p in LENGTH_PROFILES if p != args.lengths]
        profiles = others if full else ["amazon" if args.lengths != "amazon" else "full"]
        profile_rows = length_profiles(models, fmap, profiles, args)
        T_rows = scaling_in_T(args, peak) if full else []
        row_rows = scaling_in_rows(fmap, args, workdir) if full else []

    b = args.batch[0]
    inter, din = results["InterFormer"]["batches"][b], results["DIN"]["batches"][b]
    headers = ["model", "batch", "params", "train samples/s", "train s/s with loader", "eval samples/s",
               "MFLOP/sample (train)", "GFLOP/s", "of matmul peak", "peak memory (MB)", "latency p50/p99 (ms)"]
    rows = []
    for name, res in results.items():
        for size, r in res["batches"].items():
            lat = res.get("latency")
            rows.append([name, size, f"{res['params']:,}", f"{r['train_sps']:,.0f}",
                         f"{r['train_sps_loader']:,.0f}" if "train_sps_loader" in r else "-",
                         f"{r['eval_sps']:,.0f}" if "eval_sps" in r else "-", f"{r['train_flops'] / 1e6:.1f}",
                         f"{r['flops_per_s'] / 1e9:.1f}", f"{r['flop_util']:.1%}", "-" if r["peak_mem_mb"] != r["peak_mem_mb"] else f"{r['peak_mem_mb']:,.0f}",
                         f"{lat[0]:.1f} / {lat[1]:.1f}" if lat else "-"])
    report = [f"Device: {device_name}{mode}; torch {torch.__version__}; T={args.T}; histories {args.lengths}; "
              f"categories {args.categories}; matmul peak {peak / 1e9:,.1f} GFLOP/s; H5 loader {loader_rate:,.0f} samples/s (batch {b}).",
              "", table(headers, rows)]
    profile_rows = [(args.lengths, mean_length(args.lengths, b, args.T),
                     {"InterFormer": inter["train_sps"], "DIN": din["train_sps"]})] + profile_rows
    report += ["", table(["histories", "mean items", "InterFormer train samples/s", "DIN train samples/s", "speedup"],
                         [(f"{p} ({LENGTH_PROFILES[p]})", f"{m:.1f}", f"{sps['InterFormer']:,.0f}",
                           f"{sps['DIN']:,.0f}", f"{sps['InterFormer'] / sps['DIN']:.2f}")
                          for p, m, sps in profile_rows])]
    if T_rows:
        base = next((sps for T, sps, _ in T_rows if T == args.T), T_rows[0][1])
        report += ["", table(["T", "train samples/s", "time per sample vs T=%d" % args.T, "MFLOP/sample"],
                             [(T, f"{sps:,.0f}", f"{base / sps:.2f}x", f"{fl / 1e6:.1f}") for T, sps, fl in T_rows])]
    if row_rows:
        report += ["", table(["rows", "epoch (s)", "µs per row"],
                             [(n, f"{s:.1f}", f"{s / n * 1e6:.0f}") for n, s in row_rows])]
    text = "\n".join(report)
    print("\n" + text)
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            f.write(text + "\n")
        os.replace(args.out + ".tmp", args.out)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    print(f"RESULT interformer_train_sps={inter['train_sps']:.1f} din_train_sps={din['train_sps']:.1f} "
          f"speedup={inter['train_sps'] / din['train_sps']:.3f} flop_util={inter['flop_util']:.3f} "
          f"loader_ratio={loader_rate / inter['train_sps']:.2f}")


if __name__ == "__main__":
    main()
