"""InterFormer (Zeng et al., arXiv 2411.09852) as a FuxiCTR 2.0 model; SPEC §1-§4.

Algorithm 1, as built:

    X, S, mask  = FeatureArch(inputs)                       # Eqs. 5-6
    S           = [X_sum(1) ‖ S]                            # CLS tokens, once
    for l in 1..L:
        X_sum, S_sum = CrossArch_l(X, S)                    # Eqs. 10-11
        X, S         = InteractionArch_l(X, S_sum),         # Eq. 7
                       SequenceArch_l(X_sum, S)             # Eqs. 8-9 (both read layer-l inputs)
    X_sum, S_sum = CrossArch_{L+1}(X, S)                    # the last layer's outputs are used
    y = sigmoid(MLP([X_sum ‖ S_sum]))

``interleave_mode`` chooses which summaries cross over (Figure 2): ``int`` both ways,
``n2s`` only X_sum -> sequence, ``s2n`` only S_sum -> non-sequence, ``sep`` neither, and
``sole`` has no Sequence Arch: the sequence is aggregated early into one more token.
"""
import torch
from fuxictr.pytorch.layers import MLP_Block
from torch import nn

from ..arches import CrossArch, EarlyAggregation, FeatureArch, InteractionArch, SequenceArch
from ..layers import FirstOrder, HistoryMatch, TargetAttention, TargetMatch, length_groups
from ..layers.capture import capturing_graph
from ..registry import register
from .base import CTRModel

INTERLEAVE_MODES = ("int", "n2s", "s2n", "sep", "sole")


class InterFormerLayer(nn.Module):
    """One layer: Cross Arch, then the Interaction and Sequence Arches on layer-l inputs.

    Shapes: X ``[B, n, d]``, S ``[B, n_sum + T, d]``, mask ``[B, n_sum + T]`` -> the same
    shapes, plus the MHA weights ``[B, H, N, N]`` when ``need_weights`` (else None).
    """

    def __init__(self, num_tokens, embedding_dim, mode, cross_kwargs, interaction_kwargs, sequence_kwargs):
        super().__init__()
        self.mode = mode
        self.cross_arch = CrossArch(num_tokens, embedding_dim, **cross_kwargs)
        seq_to_nonseq = mode in ("int", "s2n")
        self.interaction_arch = InteractionArch(
            num_tokens, self.cross_arch.num_summary_tokens if seq_to_nonseq else 0, embedding_dim,
            **interaction_kwargs)
        self.sequence_arch = SequenceArch(embedding_dim, cross_kwargs["num_cls_tokens"],
                                          personalized=mode in ("int", "n2s"), **sequence_kwargs)

    def forward(self, X, S, mask, need_weights=False):
        X_sum, S_sum = self.cross_arch(X, S, mask)
        X_next = self.interaction_arch(X, S_sum if self.mode in ("int", "s2n") else None)
        if need_weights:
            S_next, weights = self.sequence_arch(X_sum, S, mask, need_weights=True)
        else:
            S_next, weights = self.sequence_arch(X_sum, S, mask), None
        return X_next, S_next, weights


@register
class InterFormer(CTRModel):
    """InterFormer for FuxiCTR 2.0; constructor keywords mirror the YAML keys (see README)."""

    def __init__(self, feature_map, model_id="InterFormer", gpu=-1, learning_rate=1e-3,
                 embedding_dim=16, embedding_initializer="partial(nn.init.normal_, std=0.05)",
                 num_layers=3, interaction_arch="DHEN", dhen_layers=1, low_rank=32,
                 interleave_mode="int", early_aggregation="mean", num_cls_tokens=4,
                 num_pma_tokens=2, num_recent_tokens=2, num_heads=2, use_gating=True,
                 gating_form="highway", gating_activation="sigmoid", use_pffn=True, pffn_form="linear",
                 use_mha=True, use_rope=True, residual_norm=True, head_hidden_units=[256, 128],
                 hidden_activations="SiLU", net_dropout=0.0, attention_dropout=0.0,
                 token_norm=True, dedup_sequence_tokens=True, skip_padding=True, pma_query="learned",
                 history_match=False, target_match=False, target_attention=False, merge_bias=True,
                 first_order=False, first_order_lr_scale=10.0,
                 embedding_regularizer=None, net_regularizer=None, **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu,
                         embedding_regularizer=embedding_regularizer,
                         net_regularizer=net_regularizer, **kwargs)
        if interleave_mode not in INTERLEAVE_MODES:
            raise ValueError(f"interleave_mode must be one of {', '.join(INTERLEAVE_MODES)}, "
                             f"got {interleave_mode!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        for name, on in (("history_match", history_match), ("target_match", target_match)):
            if on and interleave_mode not in ("int", "n2s"):
                raise ValueError(f"{name} feeds the non-sequence tokens into the history: it needs "
                                 f"interleave_mode int or n2s, got {interleave_mode!r}")
        if num_cls_tokens < 1:
            raise ValueError(f"num_cls_tokens must be at least 1, got {num_cls_tokens}")
        self.mode = interleave_mode
        self.skip_padding = skip_padding
        d = embedding_dim
        self.feature_arch = FeatureArch(feature_map, d, hidden_activations, embedding_initializer, token_norm,
                                        dedup_sequence_tokens, merge_bias)
        # not in the paper: DIN's attention pooling of the raw history, one more token per
        # shared-table pair (layers/target_attention.py)
        self.target_attention = (TargetAttention(len(self.feature_arch.match_pairs), d, dropout=attention_dropout,
                                                 token_norm=token_norm) if target_attention else None)
        n = self.feature_arch.num_tokens + (len(self.feature_arch.match_pairs) if target_attention else 0)
        cross_kwargs = dict(num_cls_tokens=num_cls_tokens, num_pma_tokens=num_pma_tokens,
                            num_recent_tokens=num_recent_tokens, num_heads=num_heads,
                            use_gating=use_gating, gating_form=gating_form,
                            gating_activation=gating_activation, attention_dropout=attention_dropout,
                            pma_query=pma_query)
        interaction_kwargs = dict(interaction_arch=interaction_arch, dhen_layers=dhen_layers,
                                  low_rank=low_rank, hidden_activations=hidden_activations,
                                  net_dropout=net_dropout, residual_norm=residual_norm)
        if self.mode == "sole":
            self.early_aggregation = EarlyAggregation(d, self.feature_arch.max_len, early_aggregation,
                                                      num_heads, hidden_activations, attention_dropout)
            self.interaction_layers = nn.ModuleList(
                InteractionArch(n + 1, 0, d, **interaction_kwargs) for _ in range(num_layers))
            self.cross_arch = CrossArch(n + 1, d, **cross_kwargs)
            head_tokens = num_cls_tokens
        else:
            sequence_kwargs = dict(num_heads=num_heads, use_pffn=use_pffn, use_mha=use_mha,
                                   pffn_form=pffn_form, use_rope=use_rope,
                                   attention_dropout=attention_dropout, residual_norm=residual_norm)
            self.layers = nn.ModuleList(
                InterFormerLayer(n, d, self.mode, cross_kwargs, interaction_kwargs, sequence_kwargs)
                for _ in range(num_layers))
            # not in the paper: explicit history-to-target match features (layers/history_match.py)
            self.history_match = HistoryMatch(n, d) if history_match else None
            # not in the paper: DIN's q ⊙ k on the raw tables (layers/target_match.py)
            self.target_match = (TargetMatch(len(self.feature_arch.match_pairs), d) if target_match
                                 else None)
            # learnable CLS tokens where no X_sum flows into the sequence (s2n, sep)
            self.cls_tokens = (None if self.mode in ("int", "n2s")
                               else nn.Parameter(torch.randn(num_cls_tokens, d) * 0.02))
            self.cross_arch = CrossArch(n, d, **cross_kwargs)
            head_tokens = num_cls_tokens + self.cross_arch.num_summary_tokens
        self.head = MLP_Block(head_tokens * d, head_hidden_units, hidden_activations,
                              output_dim=1, dropout_rates=net_dropout)
        # not in the paper: a per-value scalar on the logit, the wide part (layers/first_order.py)
        fields = self.feature_arch
        self.first_order = (FirstOrder([feature_map.features[f]["vocab_size"] for f in fields.sparse_fields],
                                       len(fields.dense_fields)) if first_order else None)
        self.first_order_lr_scale = first_order_lr_scale
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.model_to_device()

    def param_groups(self, lr):
        """``first_order``'s weights train at ``first_order_lr_scale`` × lr, as Wide & Deep trains its
        wide part with an optimizer of its own (layers/first_order.py says why)."""
        if self.first_order is None:
            return super().param_groups(lr)
        wide = list(self.first_order.parameters())
        deep = [p for name, p in self.named_parameters() if not name.startswith("first_order.")]
        return [{"params": deep}, {"params": wide, "lr": lr * self.first_order_lr_scale}]

    def forward(self, inputs):
        X_dict = self.get_inputs(inputs)
        y = self.head(self.summaries(X_dict).flatten(1))
        if self.first_order is not None:
            y = y + self.wide(X_dict)
        return {"y_pred": self.output_activation(y)}

    def wide(self, X_dict):
        """``first_order``'s term ``[B, 1]`` of the non-sequence fields."""
        fields = self.feature_arch
        ids = [X_dict[f].long() for f in fields.sparse_fields]
        dense = [X_dict[f].float() for f in fields.dense_fields]
        return self.first_order(torch.stack(ids, dim=1) if ids else None,
                                torch.stack(dense, dim=1) if dense else None)

    def summaries(self, X_dict):
        """``[X_sum ‖ S_sum]`` ``[B, head_tokens, d]``, the head's input.

        On the CPU with ``skip_padding``, rows are grouped by history length and each group
        runs over its own window of positions (``layers.length_groups``): every step after
        the Feature Arch is per row and blind to padding, so the result is the same up to
        float rounding, for a fraction of the work on mostly-padded histories. A GPU (where
        the grouping costs a host sync and more kernel launches) and ``torch.compile`` (one
        shape per graph) run the whole padded batch.
        """
        if self.mode == "sole" or not self.skip_padding or capturing_graph():
            return _concat(*self.encode(X_dict)[:2])
        X, ids, mask = self.tokens(X_dict)
        targets = self.match_targets(X_dict)
        groups = (length_groups(mask, self.cross_arch.num_cls_tokens) if ids.device.type == "cpu"
                  else [(None, 0, mask.shape[1])])
        parts = [self.group_summaries(X, ids, mask, targets, rows, lo, hi) for rows, lo, hi in groups]
        if len(parts) == 1:
            return parts[0]
        summary = torch.cat(parts)  # back to the batch's row order
        return torch.empty_like(summary).index_copy(0, torch.cat([rows for rows, _, _ in groups]), summary)

    def group_summaries(self, X, ids, mask, targets, rows, lo, hi):
        """``[X_sum ‖ S_sum]`` of the batch's ``rows`` (None: all) over history columns ``[lo, hi)``;
        ``targets`` are ``target_match``'s (None when off)."""
        if rows is None:
            ids, mask = ids[:, lo:hi], mask[:, lo:hi]
        else:
            X, ids, mask = X[rows], ids[rows, lo:hi], mask[rows, lo:hi]
            targets = None if targets is None else targets[rows]
        return _concat(*self.interleave(X, self.history_tokens(ids, targets), mask)[:2])

    def tokens(self, X_dict):
        """The Feature Arch's ``X [B, n, d]``, history ids ``[B, T, k]`` and mask ``[B, T]``, with
        ``target_attention``'s tokens appended to ``X`` when it is on."""
        X, ids, mask = self.feature_arch.tokens(X_dict)
        if self.target_attention is None:
            return X, ids, mask
        pooled = self.target_attention(self.feature_arch.match_targets(X_dict),
                                       self.feature_arch.match_history(ids), mask)
        return torch.cat([X, pooled], dim=1), ids, mask

    def match_targets(self, X_dict):
        """``target_match``'s raw target embeddings ``[B, m, d]``; None when it is off."""
        return None if self.target_match is None else self.feature_arch.match_targets(X_dict)

    def history_tokens(self, ids, targets):
        """``ids [B, T, k]`` -> the merged history ``S [B, T, d]``, plus ``target_match``'s term
        against ``targets [B, m, d]`` when it is on."""
        S = self.feature_arch.merge_sequence(ids)
        if self.target_match is None:
            return S
        return self.target_match(S, self.feature_arch.match_history(ids), targets)

    def encode(self, X_dict, need_weights=False):
        """Final summaries ``X_sum [B, n_sum, d]``, ``S_sum [B, m, d]`` (None in ``sole``) and
        ``{"states": [(X, S) per layer, inputs first], "attention": [[B, H, N, N] per layer]}``
        (attention only with ``need_weights``)."""
        if self.mode == "sole":
            X, ids, mask = self.tokens(X_dict)
            S = self.feature_arch.merge_sequence(ids)
            states = [(X, S)]
            X = torch.cat([X, self.early_aggregation(S, mask)], dim=1)
            for layer in self.interaction_layers:
                X = layer(X)
                states.append((X, None))
            return self.cross_arch.summarize_nonsequence(X), None, {"states": states, "attention": []}
        X, ids, mask = self.tokens(X_dict)
        return self.interleave(X, self.history_tokens(ids, self.match_targets(X_dict)), mask, need_weights)

    def interleave(self, X, S, mask, need_weights=False):
        """The interleaved layers and the final Cross Arch from the Feature Arch's ``X [B, n, d]``,
        ``S [B, T, d]``, ``mask [B, T]``; returns as ``encode``."""
        if self.history_match is not None:
            S = self.history_match(X, S)
        states, weights = [(X, S)], []
        S, mask = self.prepend_cls(X, S, mask)
        for layer in self.layers:
            X, S, w = layer(X, S, mask, need_weights=need_weights)
            states.append((X, S))
            if need_weights:
                weights.append(w)
        X_sum, S_sum = self.cross_arch(X, S, mask)
        return X_sum, S_sum, {"states": states, "attention": weights}

    def prepend_cls(self, X, S, mask):
        """``[CLS ‖ S]``: the CLS tokens are ``X_sum(1)`` (or learned ones when no X_sum may flow)."""
        if self.cls_tokens is None:
            cls = self.layers[0].cross_arch.summarize_nonsequence(X)
        else:
            cls = self.cls_tokens.expand(X.shape[0], -1, -1)
        ones = torch.ones(mask.shape[0], cls.shape[1], dtype=torch.bool, device=mask.device)
        return torch.cat([cls, S], dim=1), torch.cat([ones, mask], dim=1)

    @torch.no_grad()
    def attention_maps(self, batch_data):
        """Per-layer MHA weights ``[B, H, n_sum + T, n_sum + T]`` for a FuxiCTR batch (Figure 4)."""
        self.eval()
        return self.encode(self.get_inputs(batch_data), need_weights=True)[2]["attention"]


def _concat(X_sum, S_sum):
    """``[X_sum ‖ S_sum]`` along the tokens (``X_sum`` alone in ``sole``)."""
    return X_sum if S_sum is None else torch.cat([X_sum, S_sum], dim=1)
