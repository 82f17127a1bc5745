"""This package's DIN against FuxiCTR 2.0.4's own DIN: the same weights and the same training steps.

    python benchmarks/din_parity.py --model-zoo <FuxiCTR v2.0.4 checkout>/model_zoo

Both models are built from ``DIN_default`` with BARS's AmazonElectronics_x1 settings (batch
norm, Dice, softmax attention, dropout 0.1, lambda 5e-3) on ``--dataset`` (tiny_amazon by
default), each after the same seed. The check passes when

- the random number generator is in the same state after both constructions (the same draws
  were made, in the same order),
- every parameter and buffer is equal, in construction order, and
- ``--steps`` training steps on the same batches (dropout on) give the same losses, within
  ``--tol``.

Exits 1 and says where they part otherwise. FuxiCTR's code is read from the checkout, never
copied here.
"""
import argparse
import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from evidence_suites import BARS_DIN, MOVIELENS_PAIRS  # noqa: E402

PAIRS = {"tiny_amazon": {"din_target_field": ["item_id", "cate_id"],
                         "din_sequence_field": ["item_history", "cate_history"]},
         "movielens1m_x1_u1000": MOVIELENS_PAIRS["din"]}


def build(dataset, model_zoo, seed):
    """``(model, params, feature_map)`` of DIN_default with BARS's settings, built after ``seed``."""
    from fuxictr.pytorch.torch_utils import seed_everything

    from interformer_fuxi.runner import build_model, prepare

    overrides = dict(BARS_DIN, **PAIRS[dataset], dataset_id=dataset, verbose=0, seed=seed)
    if model_zoo:
        overrides["model_zoo"] = model_zoo
    params, feature_map, model_class = prepare(os.path.join(REPO, "config"), "DIN_default",
                                               overrides=overrides, log=False)
    seed_everything(seed)
    return build_model(params, feature_map, model_class), params, feature_map


def train_losses(model, batches):
    """The loss of each step of the training loop's own ``train_step`` (BCE + regulariser, clipping)."""
    model.train()
    return [float(model.train_step(batch).detach()) for batch in batches]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-zoo", required=True, help="FuxiCTR v2.0.4's model_zoo/ folder")
    parser.add_argument("--dataset", default="tiny_amazon", choices=sorted(PAIRS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--tol", type=float, default=1e-5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    ours, params, feature_map = build(args.dataset, None, args.seed)
    ours_rng = torch.get_rng_state()
    fuxi, _, _ = build(args.dataset, os.path.abspath(args.model_zoo), args.seed)
    problems = []
    if not torch.equal(ours_rng, torch.get_rng_state()):
        problems.append("the constructions drew different random numbers")
    a, b = list(ours.state_dict().items()), list(fuxi.state_dict().items())
    if len(a) != len(b):
        problems.append(f"{len(a)} tensors here, {len(b)} in FuxiCTR's DIN")
    for (name_a, x), (name_b, y) in zip(a, b):
        if x.shape != y.shape or not torch.equal(x, y):
            problems.append(f"first unequal tensor: {name_a} {tuple(x.shape)} vs {name_b} {tuple(y.shape)}")
            break
    from fuxictr.pytorch.dataloaders import H5DataLoader
    train, _ = H5DataLoader(feature_map, stage="train", **dict(params, batch_size=10 ** 9, shuffle=False)).make_iterator()
    rows = next(iter(train))
    g = torch.Generator().manual_seed(args.seed)
    batches = [rows[torch.randint(0, rows.shape[0], (args.batch,), generator=g)] for _ in range(args.steps)]
    torch.manual_seed(args.seed)
    loss_a = train_losses(ours, batches)
    torch.manual_seed(args.seed)
    loss_b = train_losses(fuxi, batches)
    gap = max(abs(x - y) for x, y in zip(loss_a, loss_b))
    print(f"{args.dataset}: {len(a)} tensors; losses here {[round(x, 6) for x in loss_a]}, "
          f"FuxiCTR's {[round(x, 6) for x in loss_b]}; largest difference {gap:.2e}")
    if gap > args.tol:
        problems.append(f"the training losses part by {gap:.2e} (tolerance {args.tol:g})")
    for p in problems:
        print("MISMATCH:", p)
    print(f"RESULT din_parity={'ok' if not problems else 'mismatch'} loss_gap={gap:.2e}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
