"""Sequence Arch (SPEC §2.3, Eqs. 8-9): context-aware sequence learning."""
from torch import nn

from ..layers import PFFN, RotaryMultiheadAttention, valid_positions
from ..layers.fused_pffn import fused_pffn_applies, fused_pffn_block


class SequenceArch(nn.Module):
    r"""``S(l+1) = MHA(PFFN(X_sum(l), S(l)))`` over ``[CLS ‖ sequence]``.

    PFFN multiplies every token by a per-sample ``d x d`` weight computed from ``X_sum``
    (a plain learned FFN weight when ``personalized=False``: the ``s2n``/``sep`` modes);
    MHA is bidirectional self-attention with a key-padding mask and rotary positions taken
    from the valid-token order, so pre- and post-padded histories give the same result.
    With ``residual_norm`` each block is pre-norm residual, ``S + f(LayerNorm(S))``
    (the paper shows neither; SPEC's decision, kept switchable). On the CPU the pre-norm block
    of the personalized linear PFFN runs in one C++ kernel (:func:`fused_pffn_block`, switch
    ``fused_cpu_pffn``): the same result, one pass over the tokens instead of one per op.

    Args:
        embedding_dim (int): ``d``.
        num_cls_tokens (int): ``n_sum`` (rows of ``X_sum``).
        num_heads (int): attention heads.
        use_pffn, use_mha (bool): ablation switches (Figure 5).
        pffn_form (str): ``linear`` (appendix A.2) or ``mlp``.
        personalized (bool): PFFN reads ``X_sum`` (False: plain FFN).
        use_rope (bool): rotary position embeddings on q and k.
        attention_dropout (float), residual_norm (bool).

    Shapes:
        X_sum ``[B, n_sum, d]`` (or None when not personalized), S ``[B, N, d]``,
        mask ``[B, N]`` (its CLS columns always True) -> ``[B, N, d]`` (and attention weights
        ``[B, H, N, N]`` if asked).

    Example::

        >>> arch = SequenceArch(embedding_dim=16, num_cls_tokens=4, num_heads=2)
        >>> S, mask = torch.randn(8, 34, 16), torch.ones(8, 34, dtype=torch.bool)
        >>> arch(torch.randn(8, 4, 16), S, mask).shape
        torch.Size([8, 34, 16])
    """

    def __init__(self, embedding_dim, num_cls_tokens, num_heads=2, use_pffn=True, use_mha=True,
                 pffn_form="linear", personalized=True, use_rope=True, attention_dropout=0.0,
                 residual_norm=True):
        super().__init__()
        self.personalized = personalized
        self.pffn = PFFN(embedding_dim, num_cls_tokens, pffn_form, personalized) if use_pffn else None
        self.mha = RotaryMultiheadAttention(embedding_dim, num_heads, attention_dropout,
                                            use_rope) if use_mha else None
        norm = (lambda: nn.LayerNorm(embedding_dim)) if residual_norm else (lambda: nn.Identity())
        self.residual_norm = residual_norm
        self.pffn_norm, self.mha_norm = norm(), norm()
        self.fused_cpu_pffn = True

    def _pffn_fuses(self, X_sum, S):
        return (self.fused_cpu_pffn and self.residual_norm and self.personalized and self.pffn.form == "linear"
                and fused_pffn_applies(S, X_sum, self.pffn.weight, self.pffn_norm))

    def _block(self, S, f, norm):
        return S + f(norm(S)) if self.residual_norm else f(S)

    def forward(self, X_sum, S, mask, need_weights=False):
        weights = None
        if self.pffn is not None:
            if self._pffn_fuses(X_sum, S):
                S = fused_pffn_block(S, X_sum, self.pffn.weight, self.pffn_norm)
            else:
                S = self._block(S, lambda s: self.pffn(X_sum if self.personalized else None, s), self.pffn_norm)
        if self.mha is not None:
            positions = valid_positions(mask)
            # every row holds valid CLS tokens, so the MHA has no empty row to handle
            if need_weights:
                out, weights = self.mha(self.mha_norm(S) if self.residual_norm else S, mask, positions, True,
                                        keys_nonempty=True)
                S = S + out if self.residual_norm else out
            else:
                S = self._block(S, lambda s: self.mha(s, mask, positions, keys_nonempty=True), self.mha_norm)
        return (S, weights) if need_weights else S
