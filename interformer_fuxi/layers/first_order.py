"""A first-order (logistic-regression) term on the logit (not in the paper; off by default).

One learned scalar per value of every categorical non-sequence field, and one weight per
numeric field, summed onto the head's logit: FuxiCTR's ``LogisticRegression``, the "wide" part
of Wide & Deep and DeepFM's first order. Why: on MovieLens-1M with every user, an item's mean
training label alone ranks each user's test rows better (gAUC) than any model measured; a
scalar per item carries that at once, where the deep path carries it through LayerNorm'd
tokens. Sequence fields are left out: their items reach the logit through the arches.

The weights start at zero, so the model starts as the paper's. They train at a multiple of
the model's learning rate (``first_order_lr_scale``, as Wide & Deep gives its wide part an
optimizer of its own): Adam moves a weight by about the learning rate per step, so 3 epochs
of every MovieLens-1M user at batch 2048 (255 steps) at 1e-3 leave an item's log-odds within
±0.25, where the training labels put 90% of the items between -1.5 and +1.0 of the mean's. They live outside any
``embedding_layer``, so FuxiCTR's whole-table ``embedding_regularizer`` does not reach them
(``net_regularizer`` does): at BARS's λ = 5e-3 that penalty, applied to every row at every
step, would hold a rare item's weight near its per-step data gradient / λ, a few hundredths.
"""
import torch
from torch import nn


class FirstOrder(nn.Module):
    """``Σ_f w_f[x_f] + Σ_j v_j x_j`` per row: categorical fields ``f``, numeric fields ``j``.

    Args:
        vocab_sizes (list[int]): the vocabulary size of each categorical field, in input order.
        num_dense (int): the number of numeric fields.

    Shapes:
        ids ``[B, F]`` long (one column per categorical field) or None (no such field), dense
        ``[B, num_dense]`` or None -> ``[B, 1]``.

    Example::

        >>> lr = FirstOrder([10, 5], num_dense=0)
        >>> lr(torch.tensor([[3, 1], [9, 0]])).shape
        torch.Size([2, 1])
    """

    def __init__(self, vocab_sizes, num_dense=0):
        super().__init__()
        if not vocab_sizes and not num_dense:
            raise ValueError("first_order needs a categorical or numeric non-sequence feature")
        # one table for all fields: field f's rows start at offsets[f]
        self.register_buffer("offsets", torch.tensor([0] + list(vocab_sizes), dtype=torch.long).cumsum(0)[:-1],
                             persistent=False)
        self.weights = nn.Embedding(max(sum(vocab_sizes), 1), 1)
        nn.init.zeros_(self.weights.weight)
        self.dense = nn.Linear(num_dense, 1, bias=False) if num_dense else None
        if self.dense is not None:
            nn.init.zeros_(self.dense.weight)

    def forward(self, ids, dense=None):
        out = 0
        if ids is not None:
            out = self.weights(ids + self.offsets).sum(dim=1)
        if self.dense is not None:
            out = out + self.dense(dense)
        return out
