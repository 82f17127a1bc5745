"""DIN's target attention over the raw history, as extra non-sequence tokens (not in the paper).

In InterFormer the target item reaches the history only through learned summaries: the CLS
tokens and the PFFN read ``X_sum``, and every match is made on the merged, normalised history
tokens. DIN pools the raw history rows by an MLP of ``[q, h, q − h, q ⊙ h]`` against the
target's row of the same table. This layer computes that pooling for every sequence field
that shares its table with a non-sequence field (FuxiCTR's ``share_embedding``), one DIN
attention per pair as BARS's DIN configs pair them, and hands each pooled vector to the
model as one more non-sequence token: the Interaction Arch, ``X_sum`` and so the Sequence
Arch all read it. It asks whether DIN's lead on real data is that pooling: on 1,000
MovieLens-1M users it is not (docs/design.md, "The switches measured"), so it is off by default.
"""
import torch
from fuxictr.pytorch.layers.attentions import DIN_Attention
from torch import nn


class TargetAttention(nn.Module):
    """Per shared-table pair ``f``: ``LayerNorm(Σ_t softmax_t(MLP([t_f, h_tf, t_f − h_tf, t_f ⊙ h_tf])) · h_tf)``.

    Args:
        num_pairs (int): ``m``, sequence fields whose table a non-sequence field shares.
        embedding_dim (int): ``d``.
        hidden_units (list): the attention MLP's layers (DIN's ``attention_hidden_units``).
        activation (str): their activation (``Dice``, as DIN's).
        dropout (float): the attention MLP's dropout.
        token_norm (bool): a LayerNorm on each pooled token, as on the other non-sequence tokens.

    Shapes:
        target ``[B, m, d]``, history ``[B, T, m, d]``, mask ``[B, T]`` -> ``[B, m, d]``
        (a row without history gets zeros before the norm).

    Example::

        >>> attend = TargetAttention(num_pairs=2, embedding_dim=16)
        >>> attend(torch.randn(8, 2, 16), torch.randn(8, 30, 2, 16), torch.ones(8, 30, dtype=torch.bool)).shape
        torch.Size([8, 2, 16])
    """

    def __init__(self, num_pairs, embedding_dim, hidden_units=(64,), activation="Dice", dropout=0.0,
                 token_norm=True):
        super().__init__()
        if num_pairs < 1:
            raise ValueError("target_attention needs a sequence field that shares its embedding table "
                             "with a non-sequence field (share_embedding in the dataset config)")
        self.attention = nn.ModuleList(
            DIN_Attention(embedding_dim, list(hidden_units), activation, None, dropout, batch_norm=False,
                          use_softmax=True)
            for _ in range(num_pairs))
        self.norm = nn.LayerNorm(embedding_dim) if token_norm else nn.Identity()

    def forward(self, target, history, mask):
        has_history = mask.any(-1, keepdim=True).to(history.dtype)  # [B, 1]
        pooled = [attend(target[:, f], history[:, :, f], mask) * has_history
                  for f, attend in enumerate(self.attention)]
        return self.norm(torch.stack(pooled, dim=1))
