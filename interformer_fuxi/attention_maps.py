"""Render InterFormer's per-layer attention maps to PNG, like the paper's Figure 4.

    python -m interformer_fuxi.attention_maps --expid InterFormer_tiny [--config DIR] [--sample 0] [--out FILE]

It loads the best checkpoint of a finished run, takes one test sample (``--sample``, its
index in the test split; by default the first-batch sample with the longest history), and draws one heat map per layer: attention weights averaged over
heads, over ``[CLS ‖ valid history]`` (padding dropped; history positions oldest to newest).
The PNG goes to ``<model_root>/<dataset_id>/<expid>_attention.png`` unless ``--out`` is given.
"""
import argparse
import os
import sys

import torch

from .errors import UserError, report


def sample_maps(model, batch_data, index):
    """``[L, N_valid, N_valid]`` head-averaged maps of one sample and its token labels."""
    maps = torch.stack(model.attention_maps(batch_data))[:, index].mean(1).cpu()  # [L, N, N]
    X_dict = model.get_inputs(batch_data)
    _, _, mask = model.feature_arch(X_dict)
    n_cls = maps.shape[-1] - mask.shape[1]
    keep = torch.cat([torch.ones(n_cls, dtype=torch.bool), mask[index].cpu()])
    labels = [f"CLS{i}" for i in range(n_cls)] + [f"t{i}" for i in range(int(mask[index].sum()))]
    return maps[:, keep][:, :, keep], labels


def render(maps, labels, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    layers = maps.shape[0]
    fig, axes = plt.subplots(1, layers, figsize=(4.2 * layers, 4.2), squeeze=False)
    for layer, ax in enumerate(axes[0]):
        im = ax.imshow(maps[layer].numpy(), cmap="viridis", vmin=0)
        ax.set_title(f"layer {layer + 1}")
        step = max(1, len(labels) // 12)
        ax.set_xticks(range(0, len(labels), step), labels[::step], rotation=90, fontsize=7)
        ax.set_yticks(range(0, len(labels), step), labels[::step], fontsize=7)
        ax.set_xlabel("key")
        ax.set_ylabel("query")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None):
    from fuxictr.pytorch.dataloaders import H5DataLoader

    from .runner import DEFAULT_CONFIG, load_trained
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--expid", required=True)
    parser.add_argument("--gpu", type=int, default=-1)
    parser.add_argument("--sample", type=int, help="index of the test sample (default: the "
                        "first batch's sample with the longest history)")
    parser.add_argument("--out", help="PNG path")
    args = parser.parse_args(argv)
    try:
        params, feature_map, model = load_trained(args.config, args.expid, args.gpu)
        if not hasattr(model, "attention_maps"):
            raise UserError(f"{args.expid}: model {params['model']} has no attention maps")
        split = params.get("test_data") or params["valid_data"]
        loader = H5DataLoader(feature_map, stage="test", test_data=split, batch_size=params["batch_size"],
                              shuffle=False).make_iterator()
        if model.mode == "sole":
            raise UserError(f"{args.expid}: interleave_mode sole has no Sequence Arch, hence no attention")
        batch_size = params["batch_size"]
        if args.sample is None:
            batch = next(iter(loader))
            _, _, mask = model.feature_arch(model.get_inputs(batch))
            args.sample = int(mask.sum(1).argmax())
        batch = next(b for i, b in enumerate(loader) if i == args.sample // batch_size)
        maps, labels = sample_maps(model, batch, args.sample % batch_size)
        out = args.out or os.path.join(os.path.dirname(model.checkpoint), f"{args.expid}_attention.png")
        render(maps, labels, out, f"{args.expid}: test sample {args.sample}, mean over heads")
    except UserError as exc:
        return report(exc)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
