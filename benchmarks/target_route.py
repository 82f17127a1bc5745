"""How fast each model learns a target-to-history match: "is the target item in the history?"

    python benchmarks/target_route.py [--models int n2s s2n sep int+pma DIN] [--seeds 0 1] [--epochs 12]

DIN's edge is target attention; InterFormer's target reaches the history only as X_sum
(CLS tokens in the rotary MHA, the PFFN). On synthetic rows (``tests/synthetic.py``,
``membership_batch``: 10 distinct items out of 49 per history, the target drawn from the
history for half the rows and from outside it for the rest, 8,192 training and 2,048
held-out rows) the label is a pure match of target against history, so the held-out AUC per
epoch shows whether, and how soon, a model builds one. ``int+pma`` is InterFormer with
``pma_query: personalized``. Small models (d = 16, 2 heads, 2 layers), Adam 3e-3, batch 256,
one torch thread. ``int+match`` adds ``history_match: true``, ``int+tmatch`` ``target_match:
true``, ``int+nobias`` ``merge_bias: false``, ``int+std1`` an embedding init of std 1. Prints a Markdown table of held-out AUC by
epoch.
"""
import argparse
import os
import sys
import time

import torch
from sklearn.metrics import roc_auc_score

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (REPO, os.path.join(REPO, "tests")):
    if path not in sys.path:
        sys.path.insert(0, path)

from synthetic import MODEL_DEFAULTS, feature_map, membership_batch  # noqa: E402


def make(name, fmap, seed):
    from interformer_fuxi import InterFormer
    from interformer_fuxi.models import DIN

    torch.manual_seed(seed)
    params = dict(MODEL_DEFAULTS, learning_rate=3e-3)
    if name == "DIN":
        return DIN(fmap, **params)
    mode, *extras = name.split("+")
    switches = {"pma": {"pma_query": "personalized"}, "match": {"history_match": True},
                "tmatch": {"target_match": True},
                "nobias": {"merge_bias": False}, "std1": {"embedding_initializer": "partial(nn.init.normal_, std=1.0)"}}
    return InterFormer(fmap, **params, num_layers=2, interleave_mode=mode,
                       **{k: v for extra in extras for k, v in switches[extra].items()})


def curve(name, seed, epochs):
    """Held-out AUC after each epoch and the seconds per epoch."""
    fmap = feature_map(vocab=50, max_len=10)
    train, test = membership_batch(fmap, 8192, seed=0), membership_batch(fmap, 2048, seed=1)
    model, aucs = make(name, fmap, seed), []
    started = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(1000 * seed + epoch))
        for start in range(0, len(train), 256):
            model.train_step(train[order[start:start + 256]])
        model.eval()
        with torch.no_grad():
            scores = model(test)["y_pred"].squeeze(1).numpy()
        aucs.append(roc_auc_score(test[:, -1].numpy(), scores))
    return aucs, (time.time() - started) / epochs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["int", "n2s", "s2n", "sep", "int+pma", "int+match", "DIN"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    shown = [e for e in range(args.epochs) if e % 2 == 1 or e == 0]
    print("| model | seed | " + " | ".join(f"epoch {e + 1}" for e in shown) + " | s/epoch |")
    print("|---|---:|" + "---:|" * (len(shown) + 1))
    for name in args.models:
        for seed in args.seeds:
            aucs, seconds = curve(name, seed, args.epochs)
            print(f"| {name} | {seed} | " + " | ".join(f"{aucs[e]:.3f}" for e in shown) + f" | {seconds:.1f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
