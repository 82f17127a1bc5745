"""Parameter count and forward+backward time of an InterFormer expid at AmazonElectronics_x1 scale.

    python benchmarks/model_size_and_speed.py [--expid InterFormer_default] [--batch 1024] [--T 100]
    python benchmarks/model_size_and_speed.py --data data/processed/movielens1m_x1_bench \
        --set dedup_sequence_tokens=false      # real batches of a built dataset; a switch changed

The feature map mimics BARS's AmazonElectronics_x1 without its data: item_id and cate_id
with the dataset's vocabularies (63,001 items and 801 categories, plus FuxiCTR's padding and
OOV rows), and item/cate histories of length T sharing those tables. Timing: one training
step (forward, BCE loss, backward, Adam step) on random ids, median of ``--steps`` after
4 warm-up steps (the CPU heap settles), with the machine's default torch threads and the
glibc heap reuse that ``run_expid.py`` turns on for CPU training. With ``--data``, the model
is built for that built dataset (``data/processed/<dataset_id>/``, from a ``run_expid.py`` run)
and trains on its first training batches in turn (real histories: padding and repeated items)
instead; ``--set key=value`` (YAML values) changes model settings.
"""
import argparse
import itertools
import os
import statistics
import sys
import time

import torch
import yaml
from fuxictr.features import FeatureMap
from fuxictr.pytorch.dataloaders.h5_dataloader import DataLoader as H5DataLoader

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from interformer_fuxi.config import load_model_config_section  # noqa: E402
from interformer_fuxi.cpu_heap import keep_freed_memory  # noqa: E402
from interformer_fuxi.registry import get_model  # noqa: E402
from synthetic import batch  # noqa: E402
from throughput import amazon_feature_map  # noqa: E402

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(REPO, "config"))
    parser.add_argument("--expid", default="InterFormer_default")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--T", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--data", default=None, help="a built dataset folder: train on its batches")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="model settings")
    args = parser.parse_args()
    keep_freed_memory()
    params = load_model_config_section(args.config, args.expid)
    params.update(verbose=0, model_root="unused", gpu=-1)
    params.update({k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)})
    torch.manual_seed(0)
    if args.data:
        fmap = FeatureMap(os.path.basename(os.path.normpath(args.data)), args.data)
        fmap.load(os.path.join(args.data, "feature_map.json"), params)
        loader = H5DataLoader(fmap, os.path.join(args.data, "train.h5"), batch_size=args.batch, shuffle=False)
        batches = list(itertools.islice(iter(loader), 4))
        fields = [f for f, spec in fmap.features.items() if spec["type"] == "sequence"]
        shares = [torch.unique(torch.stack([b[:, fmap.get_column_index(f)] for f in fields], -1).reshape(
            -1, len(fields)), dim=0).shape[0] / (b.shape[0] * fmap.features[fields[0]]["max_len"]) for b in batches]
        print(f"distinct history id tuples per batch: {', '.join(f'{x:.1%}' for x in shares)} of the positions")
    else:
        fmap = amazon_feature_map(args.T)
        batches = [batch(fmap, size=args.batch, lengths=torch.full((args.batch,), args.T))]
    model = get_model(params["model"])(fmap, **params)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    emb = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "embedding_layer" in n)
    print(f"{args.expid}: {total:,} parameters ({emb:,} in embeddings, {total - emb:,} in the network)")
    model.train()
    times = []
    warmup = 4
    for step in range(args.steps + warmup):
        start = time.perf_counter()
        model.train_step(batches[step % len(batches)])
        if step >= warmup:
            times.append(time.perf_counter() - start)
    ms = statistics.median(times) * 1000
    where = f"{args.data} batches" if args.data else f"T={args.T}"
    print(f"train step at batch {args.batch}, {where}: {ms:.0f} ms median over {args.steps} "
          f"({args.batch / ms * 1000:,.0f} samples/s, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
