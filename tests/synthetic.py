"""In-memory FuxiCTR feature maps and batches for model tests (no CSV, no H5)."""
from collections import OrderedDict

import torch
from fuxictr.features import FeatureMap

MODEL_DEFAULTS = dict(optimizer="adam", loss="binary_crossentropy", metrics=["AUC", "logloss"],
                      verbose=0, model_root="unused", embedding_dim=16, num_heads=2,
                      head_hidden_units=[32], learning_rate=1e-3)


def feature_map(dense=0, sparse=("item_id", "cate_id"), sequences=(("item_history", "item_id"),),
                vocab=50, max_len=10):
    """Taobao-like when ``dense`` > 0 and several sequences; Amazon-like by default."""
    fmap = FeatureMap("synthetic", "unused")
    feats = OrderedDict(user_id={"type": "meta"})
    for i in range(dense):
        feats[f"dense_{i}"] = {"type": "numeric", "source": ""}
    for name in sparse:
        feats[name] = {"type": "categorical", "source": "", "vocab_size": vocab, "padding_idx": 0}
    for name, shared in sequences:
        spec = {"type": "sequence", "source": "", "vocab_size": vocab, "padding_idx": 0, "max_len": max_len}
        if shared:
            spec["share_embedding"] = shared
        feats[name] = spec
    fmap.features = feats
    fmap.labels = ["label"]
    fmap.group_id = "user_id"
    fmap.num_fields = fmap.get_num_fields()
    fmap.set_column_index()
    return fmap


def batch(fmap, size=32, seed=0, lengths=None, padding="post", labels=None):
    """A FuxiCTR batch tensor ``[B, input_length + 1]`` with histories of the given lengths."""
    g = torch.Generator().manual_seed(seed)
    cols = []
    seq_fields = [f for f, s in fmap.features.items() if s["type"] == "sequence"]
    T = fmap.features[seq_fields[0]]["max_len"] if seq_fields else 0
    if lengths is None:
        lengths = torch.randint(0, T + 1, (size,), generator=g)
    lengths = torch.as_tensor(lengths)
    valid = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)  # post-padded layout
    if padding == "pre":
        valid = valid.flip(1)
    for name, spec in fmap.features.items():
        if spec["type"] == "meta":
            cols.append(torch.arange(size).float().unsqueeze(1) % 7)
        elif spec["type"] == "numeric":
            cols.append(torch.randn(size, 1, generator=g))
        elif spec["type"] == "categorical":
            cols.append(torch.randint(1, spec["vocab_size"], (size, 1), generator=g).float())
        else:
            ids = torch.randint(1, spec["vocab_size"], (size, T), generator=g)
            cols.append(torch.where(valid, _align(ids, lengths, padding), 0).float())
    y = labels if labels is not None else torch.randint(0, 2, (size,), generator=g)
    cols.append(torch.as_tensor(y).float().reshape(-1, 1))
    return torch.cat(cols, dim=1)


def _align(ids, lengths, padding):
    """Place each row's first ``length`` ids at the end (pre-padding) or the start (post)."""
    if padding == "post":
        return ids
    T = ids.shape[1]
    src = (torch.arange(T).unsqueeze(0) - (T - lengths.unsqueeze(1))).clamp(min=0)
    return ids.gather(1, src)


def repad(fmap, data, padding):
    """The same batch with every history moved to the other padding side."""
    out = data.clone()
    for name, spec in fmap.features.items():
        if spec["type"] != "sequence":
            continue
        idx = fmap.get_column_index(name)
        ids = data[:, idx].long()
        valid = ids != 0
        lengths = valid.sum(1)
        T = ids.shape[1]
        order = torch.argsort((~valid).int(), dim=1, stable=True)  # valid items first, in order
        packed = ids.gather(1, order)
        out[:, idx] = _align_packed(packed, lengths, padding, T).float()
    return out


def _align_packed(packed, lengths, padding, T):
    valid = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    if padding == "post":
        return torch.where(valid, packed, 0)
    return torch.where(valid.flip(1), _align(packed, lengths, "pre"), 0)


def membership_batch(fmap, size, seed, T=10):
    """Full histories of ``T`` distinct items; the label says whether the target item is one
    of them (half the rows): a task only a target-to-history match solves."""
    g = torch.Generator().manual_seed(seed)
    vocab = fmap.features["item_id"]["vocab_size"]
    hist = torch.rand(size, vocab - 1, generator=g).argsort(1)[:, :T] + 1
    label = torch.randint(0, 2, (size,), generator=g)
    seen = torch.zeros(size, vocab, dtype=torch.bool).scatter_(1, hist, True)
    seen[:, 0] = True
    in_hist = hist.gather(1, torch.randint(0, T, (size, 1), generator=g)).squeeze(1)
    not_in = torch.rand(size, vocab, generator=g).masked_fill(seen, -1).argmax(1)
    data = batch(fmap, size=size, seed=seed, lengths=torch.full((size,), T), labels=label)
    data[:, fmap.get_column_index("item_id")] = torch.where(label.bool(), in_hist, not_in).float()
    data[:, fmap.get_column_index("item_history")] = hist.float()
    return data
