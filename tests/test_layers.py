"""Behavioural tests of interformer_fuxi.layers (CPU, deterministic, fast)."""
import pytest
import torch

from interformer_fuxi.layers import (
    DHEN,
    LCE,
    PFFN,
    PMA,
    DCNv2Interaction,
    DHENLayer,
    DotInteraction,
    Gating,
    MaskNetMerge,
    RotaryEmbedding,
    RotaryMultiheadAttention,
    TargetMatch,
    build_interaction,
    recent_tokens,
    valid_positions,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _post_and_pre(lengths, T, d, dtype=torch.float32):
    """Same histories post-padded and pre-padded (padding rows filled with noise)."""
    B = len(lengths)
    items = torch.randn(B, T, d, dtype=dtype)
    post = torch.randn(B, T, d, dtype=dtype) * 5  # noise: masks must not come from zeros
    pre = torch.randn(B, T, d, dtype=dtype) * 5
    mask_post = torch.zeros(B, T, dtype=torch.bool)
    mask_pre = torch.zeros(B, T, dtype=torch.bool)
    for b, n in enumerate(lengths):
        post[b, :n] = items[b, :n]
        mask_post[b, :n] = True
        pre[b, T - n:] = items[b, :n]
        mask_pre[b, T - n:] = True
    return items, post, mask_post, pre, mask_pre


def _check_grads(module, *inputs):
    out = module(*inputs)
    out = out[0] if isinstance(out, tuple) else out
    out.square().sum().backward()
    params = [p for p in module.parameters() if p.requires_grad]
    assert params, "module has no parameters"
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.requires_grad:
            assert x.grad is not None and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------- positions
def test_valid_positions_pre_post_equal():
    lengths, T = [5, 2, 0, 7], 7
    _, _, mp, _, mr = _post_and_pre(lengths, T, 1)
    pp, pr = valid_positions(mp), valid_positions(mr)
    for b, n in enumerate(lengths):
        assert pp[b][mp[b]].tolist() == list(range(n))
        assert pr[b][mr[b]].tolist() == list(range(n))
        assert (pp[b][~mp[b]] == 0).all() and (pr[b][~mr[b]] == 0).all()
    assert pp.dtype == torch.long


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_recent_tokens_newest_first(k):
    lengths, T, d = [6, 3, 1, 0, 2], 6, 4
    items, post, mp, pre, mr = _post_and_pre(lengths, T, d)
    for S, m in ((post, mp), (pre, mr)):
        tok, tm = recent_tokens(S, m, k)
        assert tok.shape == (len(lengths), k, d) and tm.shape == (len(lengths), k)
        for b, n in enumerate(lengths):
            for j in range(k):
                if j < n:
                    assert tm[b, j]
                    assert torch.equal(tok[b, j], items[b, n - 1 - j])  # newest first
                else:
                    assert not tm[b, j]
                    assert (tok[b, j] == 0).all()


def test_recent_tokens_ignores_nonfinite_padding_and_k0():
    S = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    S[0, 2:] = float("inf")
    S[1] = float("nan")
    tok, tm = recent_tokens(S, mask, 3)
    assert torch.isfinite(tok).all()
    assert tm.tolist() == [[True, True, False], [False, False, False]]
    tok0, tm0 = recent_tokens(S, mask, 0)
    assert tok0.shape == (2, 0, 3) and tm0.shape == (2, 0) and tm0.dtype == torch.bool


# ---------------------------------------------------------------- RoPE
def test_rope_rejects_odd_head_dim_and_grows_cache():
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(5)
    rope = RotaryEmbedding(4, max_positions=8)
    assert "cos_cached" not in rope.state_dict()
    x = torch.randn(1, 1, 3, 4)
    out = rope(x, torch.tensor([[0, 1, 300]]))
    assert rope.cos_cached.shape[0] >= 301
    # position 0 is the identity rotation; rotation preserves norms
    assert torch.allclose(out[..., 0, :], x[..., 0, :])
    assert torch.allclose(out.norm(dim=-1), x.norm(dim=-1), atol=1e-5)


def test_rope_scores_depend_on_relative_position_only():
    rope = RotaryEmbedding(8)
    q = torch.randn(2, 2, 5, 8, dtype=torch.float64)
    k = torch.randn(2, 2, 5, 8, dtype=torch.float64)
    pos = torch.tensor([[0, 1, 2, 3, 4], [3, 1, 4, 1, 5]])
    s0 = rope(q, pos) @ rope(k, pos).transpose(-1, -2)
    s1 = rope(q, pos + 17) @ rope(k, pos + 17).transpose(-1, -2)
    assert torch.allclose(s0, s1, atol=1e-4)
    assert not torch.allclose(s0, q @ k.transpose(-1, -2), atol=1e-3)  # RoPE does something


# ---------------------------------------------------------------- attention
def test_attention_pre_vs_post_padding_identical():
    lengths, T, d = [6, 3, 1, 4], 6, 16
    items, post, mp, pre, mr = _post_and_pre(lengths, T, d)
    mha = RotaryMultiheadAttention(d, num_heads=4).eval()
    out_post = mha(post, mp, valid_positions(mp))
    out_pre = mha(pre, mr, valid_positions(mr))
    for b, n in enumerate(lengths):
        assert torch.allclose(out_post[b, :n], out_pre[b, T - n:], atol=1e-5)


def test_attention_masked_inputs_do_not_leak():
    B, N, d = 3, 7, 8
    x = torch.randn(B, N, d)
    mask = torch.rand(B, N) > 0.4
    mask[:, 0] = True
    mha = RotaryMultiheadAttention(d, num_heads=2).eval()
    pos = valid_positions(mask)
    out = mha(x, mask, pos)
    x2 = torch.where(mask.unsqueeze(-1), x, torch.randn(B, N, d) * 100)
    out2 = mha(x2, mask, pos)
    assert torch.allclose(out[mask], out2[mask], atol=1e-5)


def test_attention_rope_shift_invariance():
    mha = RotaryMultiheadAttention(8, num_heads=2).double().eval()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    mask = torch.ones(2, 5, dtype=torch.bool)
    pos = torch.arange(5).expand(2, 5)
    assert torch.allclose(mha(x, mask, pos), mha(x, mask, pos + 40), atol=1e-6)
    assert not torch.allclose(mha(x, mask, pos), mha(x, mask, pos.flip(-1)), atol=1e-4)
    no_rope = RotaryMultiheadAttention(8, num_heads=2, use_rope=False).double().eval()
    assert torch.allclose(no_rope(x, mask, pos), no_rope(x, mask, pos.flip(-1)), atol=1e-8)


def test_attention_weights_path():
    B, N, d, H = 3, 6, 8, 2
    x = torch.randn(B, N, d)
    mask = torch.rand(B, N) > 0.5
    mask[0, :] = True
    mask[1, 3] = True
    mask[2, :] = False  # no valid key
    mha = RotaryMultiheadAttention(d, num_heads=H).eval()
    pos = valid_positions(mask)
    fast = mha(x, mask, pos)
    out, w = mha(x, mask, pos, need_weights=True)
    assert w.shape == (B, H, N, N)
    assert torch.allclose(out, fast, atol=1e-5)
    key_mask = mask.view(B, 1, 1, N).expand_as(w)
    assert (w[~key_mask] == 0).all()
    assert torch.allclose(w[:2].sum(-1), torch.ones(2, H, N), atol=1e-5)
    assert torch.isfinite(fast).all() and (fast[2] == 0).all() and (w[2] == 0).all()


def test_attention_validation_dropout_and_grads():
    with pytest.raises(ValueError):
        RotaryMultiheadAttention(10, num_heads=3)
    mha = RotaryMultiheadAttention(8, num_heads=2, attention_dropout=0.5)
    x = torch.randn(2, 5, 8)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mha.eval()
    assert torch.equal(mha(x, mask), mha(x, mask))  # no dropout in eval
    mha.train()
    mask[1] = False
    _check_grads(mha, x.requires_grad_(), mask)


# ---------------------------------------------------------------- PMA
def test_pma_ignores_masked_keys_and_empty_rows():
    B, N, d = 3, 6, 8
    S = torch.randn(B, N, d)
    mask = torch.rand(B, N) > 0.5
    mask[0, 0] = mask[1, 1] = True
    mask[2] = False
    pma = PMA(d, num_seeds=2, num_heads=2).eval()
    out = pma(S, mask)
    assert out.shape == (B, 2, d)
    S2 = torch.where(mask.unsqueeze(-1), S, torch.randn(B, N, d) * 100)
    assert torch.allclose(out, pma(S2, mask), atol=1e-5)
    assert torch.isfinite(out).all() and (out[2] == 0).all()
    # order invariance (pooling uses no positions)
    perm = torch.randperm(N)
    assert torch.allclose(out, pma(S[:, perm], mask[:, perm]), atol=1e-5)
    _check_grads(pma, S.requires_grad_(), mask)


def test_pma_per_sample_seeds_pool_like_shared_ones_when_the_offsets_agree():
    torch.manual_seed(0)
    pma = PMA(16, num_seeds=2, num_heads=2).eval()
    S, mask = torch.randn(5, 9, 16), torch.rand(5, 9) > 0.3
    mask[2] = False  # an empty row gets zeros on both paths
    index = torch.randint(0, 9, (5, 3))
    shared, gathered = pma(S, mask, gather=index)
    offsets = torch.zeros(5, 2, 16)
    per_sample, gathered_2 = pma(S, mask, gather=index, seed_offsets=offsets)
    assert torch.allclose(shared, per_sample, atol=1e-5) and torch.equal(gathered, gathered_2)
    offsets[3] = 1.0  # only row 3's queries move
    moved = pma(S, mask, seed_offsets=offsets)
    assert torch.allclose(moved[[0, 1, 2, 4]], shared[[0, 1, 2, 4]], atol=1e-5)
    assert not torch.allclose(moved[3], shared[3], atol=1e-3)


def test_pma_zero_seeds():
    pma = PMA(8, num_seeds=0, num_heads=2)
    assert sum(p.numel() for p in pma.parameters()) == 0
    assert pma(torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)).shape == (2, 0, 8)


# ---------------------------------------------------------------- PFFN
@pytest.mark.parametrize("form", ["linear", "mlp"])
def test_pffn_matches_per_sample_reference(form):
    B, n_sum, N, d = 3, 4, 5, 6
    pffn = PFFN(d, n_sum, form=form)
    X_sum, S = torch.randn(B, n_sum, d), torch.randn(B, N, d)
    out = pffn(X_sum, S)
    for b in range(B):
        if form == "linear":
            W = X_sum[b].T @ pffn.weight  # [d, d]
        else:
            W = pffn.mlp(X_sum[b].reshape(-1)).view(d, d)
        assert torch.allclose(out[b], S[b] @ W, atol=1e-5)
    _check_grads(pffn, X_sum.requires_grad_(), S.requires_grad_())


@pytest.mark.parametrize("form,personalized", [("linear", True), ("mlp", True), ("linear", False)])
def test_pffn_init_keeps_scale(form, personalized):
    d, n_sum = 64, 4
    pffn = PFFN(d, n_sum, form=form, personalized=personalized)
    X_sum, S = torch.randn(512, n_sum, d), torch.randn(512, 50, d)
    ratio = pffn(X_sum, S).std() / S.std()
    assert 0.5 < ratio < 2.0


def test_pffn_not_personalized_and_validation():
    pffn = PFFN(6, 4, personalized=False)
    S = torch.randn(2, 5, 6)
    ref = pffn(None, S)
    assert torch.allclose(ref, pffn(torch.randn(2, 4, 6), S))
    assert torch.allclose(ref, S @ pffn.weight)
    with pytest.raises(ValueError, match="'conv'"):
        PFFN(6, 4, form="conv")


# ---------------------------------------------------------------- gating
def test_gating_forms():
    X = torch.randn(2, 3, 5)
    for act, fn in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh), ("identity", lambda t: t)):
        g = Gating(5, form="paper", activation=act)
        assert torch.allclose(g(X), fn(X * g.mlp(X)))
    h = Gating(5, form="highway", activation="tanh")
    assert torch.allclose(h(X), X * torch.sigmoid(h.mlp(X)))
    off = Gating(5, enabled=False)
    assert sum(p.numel() for p in off.parameters()) == 0 and off(X) is X
    with pytest.raises(ValueError, match="'gelu'.*sigmoid"):
        Gating(5, activation="gelu")
    with pytest.raises(ValueError, match="'foo'.*highway"):
        Gating(5, form="foo")
    _check_grads(Gating(5), X.clone().requires_grad_())


# ---------------------------------------------------------------- merge / LCE
def test_masknet_merge_formula_and_k1():
    m = MaskNetMerge(num_sequences=3, embedding_dim=4)
    S = torch.randn(2, 7, 12)
    assert torch.allclose(m(S), m.mlp_lce(S * m.mlp_mask(S)))
    assert m(S).shape == (2, 7, 4)
    m1 = MaskNetMerge(1, 4, hidden_activations="ReLU")
    assert m1(torch.randn(2, 7, 4)).shape == (2, 7, 4)
    _check_grads(m, S.requires_grad_())


def test_lce_formula_and_zero_outputs():
    lce = LCE(5, 3)
    X = torch.randn(2, 5, 4)
    ref = torch.stack([lce.weight.T @ X[b] + lce.bias for b in range(2)])
    assert torch.allclose(lce(X), ref, atol=1e-6)
    assert LCE(5, 0)(X).shape == (2, 0, 4)
    assert LCE(5, 3, bias=False).bias is None
    _check_grads(lce, X.requires_grad_())


# ---------------------------------------------------------------- interactions
def test_dot_interaction_matches_pairwise_reference():
    n, d, n_out = 5, 4, 3
    dot = DotInteraction(n, d, n_out)
    Z = torch.randn(2, n, d)
    pairs = torch.stack([
        torch.stack([Z[b, i] @ Z[b, j] for i in range(n) for j in range(i + 1, n)])
        for b in range(2)
    ])
    ref = dot.linear(pairs).view(2, n_out, d)
    assert torch.allclose(dot(Z), ref, atol=1e-5)
    _check_grads(dot, Z.requires_grad_())


def test_dcn_matches_reference():
    n, d, n_out = 3, 4, 2
    dcn = DCNv2Interaction(n, d, n_out, num_cross_layers=2, low_rank=3)
    Z = torch.randn(2, n, d)
    x0 = Z.reshape(2, -1)
    x = x0
    for l in range(2):
        x = x0 * (x @ dcn.cross.V[l].weight.T @ dcn.cross.U[l].weight.T + dcn.cross.U[l].bias) + x
    assert torch.allclose(dcn(Z), dcn.linear(x).view(2, n_out, d), atol=1e-5)
    _check_grads(dcn, Z.requires_grad_())


def test_dhen_shortcut_and_ensembles():
    Z = torch.randn(2, 5, 8)
    same = DHENLayer(5, 8, 5, low_rank=4)
    assert isinstance(same.shortcut, torch.nn.Identity)
    assert torch.allclose(same(Z), same.norm(same.dot(Z) + same.dcn(Z) + Z), atol=1e-5)
    diff = DHENLayer(5, 8, 3, low_rank=4)
    assert isinstance(diff.shortcut, LCE)
    sc = torch.einsum("bnd,nm->bmd", Z, diff.shortcut.weight)
    assert torch.allclose(diff(Z), diff.norm(diff.dot(Z) + diff.dcn(Z) + sc), atol=1e-5)
    soft = DHENLayer(5, 8, 5, ensemble="softmax", low_rank=4)
    assert torch.allclose(soft(Z), soft.norm(0.5 * soft.dot(Z) + 0.5 * soft.dcn(Z) + Z), atol=1e-5)
    with pytest.raises(ValueError, match="'max'"):
        DHENLayer(5, 8, 5, ensemble="max")
    stack = DHEN(5, 8, 3, num_layers=3, low_rank=4)
    assert [l.shortcut.__class__.__name__ for l in stack.layers] == ["LCE", "Identity", "Identity"]
    out = stack(Z)
    assert out.shape == (2, 3, 8)
    assert torch.allclose(out.mean(-1), torch.zeros(2, 3), atol=1e-5)  # LayerNorm output
    _check_grads(stack, Z.requires_grad_())
    _check_grads(soft, torch.randn(2, 5, 8))


def test_build_interaction():
    Z = torch.randn(2, 6, 8)
    for name, cls in (("DOT", DotInteraction), ("dcnv2", DCNv2Interaction), ("Dhen", DHEN)):
        m = build_interaction(name, 6, 8, 4, low_rank=4)
        assert isinstance(m, cls) and m(Z).shape == (2, 4, 8)
    assert len(build_interaction("DHEN", 6, 8, 4, dhen_layers=2).layers) == 2
    with pytest.raises(ValueError, match="'wukong'.*DOT"):
        build_interaction("wukong", 6, 8, 4)


def test_target_match_scores_the_target_in_the_history_whatever_the_tables_scale():
    """With a map that sums the features, a history item equal to the target adds ``d`` (its
    cosine, times d), an orthogonal one 0, padding (a zero row) 0: at any table scale, since
    FuxiCTR's whole-table L2 shrinks the tables as training goes."""
    d = 8
    match = TargetMatch(num_pairs=1, embedding_dim=d)
    with torch.no_grad():
        match.weight.fill_(1.0)
    target = torch.zeros(1, 1, d)
    target[0, 0, 0] = 1.0
    other = torch.zeros(1, 1, d)
    other[0, 0, 1] = 1.0
    for scale in (1e-3, 1.0):
        history = torch.stack([target[:, 0] * scale, other[:, 0] * scale, torch.zeros(1, d)], dim=1)
        out = match(torch.zeros(1, 3, d), history.unsqueeze(2), target * scale)
        assert torch.allclose(out[0, :, 0], torch.tensor([float(d), 0.0, 0.0]), atol=1e-4)
