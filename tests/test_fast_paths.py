"""Every speed switch keeps the predictions of the plain path (within float tolerance)."""

import pytest
import torch

from interformer_fuxi.layers import RotaryEmbedding, RotaryMultiheadAttention, length_groups, valid_positions
from interformer_fuxi.models import DIN, InterFormer, TransAct

from synthetic import MODEL_DEFAULTS, batch, feature_map

FMAP = feature_map(dense=1, sequences=(("item_history", "item_id"), ("cate_history", "cate_id")))


def build(model_class, seed=0, **kwargs):
    torch.manual_seed(seed)
    return model_class(FMAP, **dict(MODEL_DEFAULTS, **kwargs))


def predictions(model, data):
    model.eval()
    with torch.no_grad():
        out = model(data)["y_pred"].squeeze(1)
    model.train()
    return out


def predicts_and_trains_alike(fast, plain, data, steps=3):
    """Two models from the same weights, one on a fast path: the same predictions, before and
    after ``steps`` training steps."""
    assert torch.allclose(predictions(fast, data), predictions(plain, data), atol=1e-6)
    for _ in range(steps):
        fast.train_step(data)
        plain.train_step(data)
    assert torch.allclose(predictions(fast, data), predictions(plain, data), atol=1e-5)


def trains_alike_without(module_class, switch):
    """InterFormer with and without a fast path (``switch`` off in every ``module_class``
    module) predicts and trains alike; returns the model with it."""
    data = batch(FMAP, size=48, lengths=torch.arange(48) % 11)
    fast, plain = build(InterFormer), build(InterFormer)
    for m in plain.modules():
        if isinstance(m, module_class):
            setattr(m, switch, False)
    predicts_and_trains_alike(fast, plain, data)
    return fast


@pytest.mark.parametrize("model_class", [InterFormer, DIN, TransAct])
def test_fused_adam_trains_like_the_plain_adam(model_class):
    data = batch(FMAP, size=64, lengths=torch.arange(64) % 11)
    fused, plain = build(model_class), build(model_class, fused_optimizer=False)
    assert fused.optimizer.defaults["fused"] and not plain.optimizer.defaults["fused"]
    assert torch.equal(predictions(fused, data), predictions(plain, data))
    for _ in range(5):
        fused.train_step(data)
        plain.train_step(data)
    assert torch.allclose(predictions(fused, data), predictions(plain, data), atol=1e-5)


def test_rope_token_major_rotation_equals_the_per_head_rotation():
    rope = RotaryEmbedding(8, max_positions=4)
    mask = torch.rand(3, 12) > 0.3
    positions = valid_positions(mask)
    x = torch.randn(3, 12, 2, 8)  # [B, N, q/k, dh]
    rotated = rope.rotate_tokens(x, positions, bound=12)  # grows the tables without reading positions
    assert rope.cos_cached.shape[0] >= 12
    assert torch.allclose(rotated.permute(0, 2, 1, 3), rope(x.permute(0, 2, 1, 3), positions), atol=1e-6)


def test_rope_hand_written_backward_equals_autograd_of_the_plain_rotation():
    rope = RotaryEmbedding(8).double()
    positions = valid_positions(torch.rand(3, 12) > 0.3)
    x = torch.randn(3, 12, 2, 2, 8, dtype=torch.float64, requires_grad=True)  # [B, N, q/k, H, dh]
    assert torch.autograd.gradcheck(lambda t: rope.rotate_tokens(t, positions, bound=12), (x,))
    grad = torch.randn_like(x)
    fast, = torch.autograd.grad(rope.rotate_tokens(x, positions, bound=12), x, grad)
    plain_out = rope(x.permute(0, 2, 3, 1, 4).reshape(3, 4, 12, 8), positions)  # [B, q/k*H, N, dh]
    plain, = torch.autograd.grad(plain_out, x, grad.permute(0, 2, 3, 1, 4).reshape(3, 4, 12, 8))
    assert torch.allclose(fast, plain, atol=1e-12)


def test_attention_reads_nothing_back_from_a_device():
    """On the meta device (a stand-in for a GPU), any read of the batch on the host raises:
    the CPU-only path choices (folded RoPE, dropped all-valid mask) are never made there,
    and the RoPE tables grow by the known length, not by reading the positions."""
    mha = RotaryMultiheadAttention(16, 2).to("meta")
    x = torch.randn(2, 7, 16, device="meta")
    for mask in (torch.rand(2, 7) > 0.3, torch.ones(2, 7, dtype=torch.bool)):
        mask = mask.to("meta")
        for keys_nonempty in (False, True):
            assert mha(x, mask, valid_positions(mask), keys_nonempty=keys_nonempty).shape == (2, 7, 16)
    with pytest.raises(RuntimeError, match="meta"):
        bool(mask.all())  # what the CPU path does


def test_torch_compile_switch_keeps_predictions():
    data = batch(FMAP, size=32, lengths=torch.arange(32) % 11)
    eager = build(InterFormer, num_layers=1)
    compiled = build(InterFormer, num_layers=1, torch_compile=True)
    compiled.load_state_dict(eager.state_dict())
    assert torch.allclose(predictions(compiled, data), predictions(eager, data), atol=1e-5)


def test_torch_compile_mode_is_checked():
    with pytest.raises(ValueError, match="torch_compile must be one of .*reduce-overhead"):
        build(DIN, torch_compile="fastest")


def test_mixed_precision_is_checked_and_is_a_no_op_on_cpu():
    with pytest.raises(ValueError, match="mixed_precision"):
        build(DIN, mixed_precision="fp8")
    data = batch(FMAP, size=16)
    plain, bf16 = build(DIN), build(DIN, mixed_precision="bf16")
    assert torch.equal(predictions(plain, data), predictions(bf16, data))
    assert torch.equal(plain.predict_batch(data), bf16.predict_batch(data))


def test_attention_fast_layout_equals_the_plain_formulation():
    """q/k rotated together in the projection's layout == per-head rotate_half on q and k."""
    import math
    import torch.nn.functional as F
    torch.manual_seed(0)
    B, N, d, H = 3, 9, 16, 2
    mha = RotaryMultiheadAttention(d, H)
    x, mask = torch.randn(B, N, d), torch.rand(B, N) > 0.3
    mask[0] = False  # an empty row too
    positions = valid_positions(mask)
    q, k, v = mha.qkv(x).view(B, N, 3, H, d // H).permute(2, 0, 3, 1, 4)
    q, k = mha.rope(q, positions), mha.rope(k, positions)
    has_key = mask.any(-1)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(d // H)).masked_fill(
        ~(mask | ~has_key[:, None])[:, None, None, :], float("-inf"))
    plain = mha.out_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(B, N, d)) * has_key[:, None, None]
    assert torch.allclose(mha(x, mask, positions), plain, atol=1e-6)
    full = torch.ones(B, N, dtype=torch.bool)  # every key valid: no mask reaches the kernel
    assert torch.allclose(mha(x, full, valid_positions(full)), mha(x, None, None), atol=1e-6)
    q, k, v = mha.qkv(x).view(B, N, 3, H, d // H).permute(2, 0, 3, 1, 4)
    q, k = mha.rope(q, valid_positions(full)), mha.rope(k, valid_positions(full))
    plain_full = mha.out_proj(((q @ k.transpose(-2, -1) / math.sqrt(d // H)).softmax(-1) @ v)
                              .transpose(1, 2).reshape(B, N, d))
    mha.fold_min_rows = 1  # the folded path too, small as the batch is
    for fold in (True, False):
        mha.fold_rope = fold
        assert torch.allclose(mha(x, full, valid_positions(full)), plain_full, atol=1e-6)
    mask[:, 0] = True  # every row has a key: the caller may skip the empty-row handling
    positions = valid_positions(mask)
    assert torch.allclose(mha(x, mask, positions, keys_nonempty=True), mha(x, mask, positions), atol=1e-6)
    qk = torch.randn(B, N, 2, H, d // H)
    rotated = mha.rope.rotate_tokens(qk, positions, bound=N)
    assert torch.allclose(rotated.permute(2, 0, 3, 1, 4), mha.rope(qk.permute(2, 0, 3, 1, 4), positions),
                          atol=1e-6)


def _attention_and_grads(mha, x, mask, fold):
    """Output at the valid positions, and the gradients of the input and parameters."""
    mha.fold_rope = fold
    x = x.clone().requires_grad_(True)
    out = mha(x, mask, valid_positions(mask), keys_nonempty=True) * mask.unsqueeze(-1)
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(),
                                [x] + list(mha.parameters()))
    return [out.detach()] + list(grads)


def test_rope_folded_into_column_weights_equals_rotating_q_and_k():
    torch.manual_seed(0)
    B, N, d, H = 6, 13, 16, 2
    mha = RotaryMultiheadAttention(d, H)
    mha.fold_min_rows = 1  # small batches take the plain path by default
    x = torch.randn(B, N, d)
    lengths = torch.tensor([13, 13, 1, 5, 12, 2])  # full and post-padded rows
    mask = torch.arange(N).unsqueeze(0) < lengths.unsqueeze(1)
    assert mha._positions_are_columns(x, mask, valid_positions(mask))
    folded, plain = _attention_and_grads(mha, x, mask, True), _attention_and_grads(mha, x, mask, False)
    for a, b in zip(folded, plain):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert folded[0].abs().sum() > 0
    # v's bias is added after the output projection only where the weights sum to 1: under
    # attention dropout (training) it stays on the values, and both paths drop the same weights
    mha.attention_dropout = 0.5
    outs = []
    for fold in (True, False):
        mha.fold_rope = fold
        torch.manual_seed(5)
        outs.append(mha(x, mask, valid_positions(mask), keys_nonempty=True) * mask.unsqueeze(-1))
    assert torch.allclose(outs[0], outs[1], atol=1e-5, rtol=1e-4)


def test_column_qkv_gradients_are_exact():
    from interformer_fuxi.layers.column_qkv import column_qkv
    g = torch.Generator().manual_seed(0)
    B, N, d, dq = 3, 4, 5, 6
    args = [torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
            for shape in [(B, N, d), (N, dq, d), (N, dq, d), (N, dq), (N, dq), (dq, d), (dq,)]]
    assert torch.autograd.gradcheck(column_qkv, args)


def test_rope_is_folded_only_where_every_position_is_its_column():
    mha = RotaryMultiheadAttention(16, 2)
    x = torch.randn(4, 9, 16)
    lengths = torch.tensor([[9], [3], [0], [6]])
    post = torch.arange(9).unsqueeze(0) < lengths
    assert not mha._positions_are_columns(x, post, valid_positions(post))  # 4 rows: too few to pay
    assert mha._positions_are_columns(x.repeat(128, 1, 1), post.repeat(128, 1), None)  # 512 rows
    mha.fold_min_rows = 1
    assert mha._positions_are_columns(x, post, valid_positions(post))
    assert mha._positions_are_columns(x, None, None)
    pre = post.flip(1)  # ranks differ from columns: the plain rotation
    assert not mha._positions_are_columns(x, pre, valid_positions(pre))
    assert not mha._positions_are_columns(x, None, valid_positions(pre))
    mha.fold_rope = False
    assert not mha._positions_are_columns(x, post, valid_positions(post))
    mha.fold_rope = True
    # never on another device: the check would read the batch back (a sync on a GPU)
    assert not mha._positions_are_columns(x.to("meta"), post.to("meta"), None)
    assert not mha._positions_are_columns(x.double(), post, None)  # weights in another dtype


@pytest.mark.parametrize("mode", ["int", "n2s"])
def test_rope_folded_into_column_weights_keeps_interformer_predictions_and_training(mode):
    data = batch(FMAP, size=48, lengths=torch.arange(48) % 11)  # post-padded, full and empty rows
    folded = build(InterFormer, interleave_mode=mode)
    plain = build(InterFormer, interleave_mode=mode)
    for m in plain.modules():
        if isinstance(m, RotaryMultiheadAttention):
            m.fold_rope = False
    calls = []
    for m in folded.modules():
        if isinstance(m, RotaryMultiheadAttention):
            m.fold_min_rows = 1
            m.register_forward_hook(lambda mod, args, out: calls.append(
                mod._positions_are_columns(args[0], args[1], args[2])))
    predicts_and_trains_alike(folded, plain, data)
    assert calls and all(calls)


def test_pma_without_projecting_keys_and_values_equals_the_plain_attention():
    import math
    from interformer_fuxi.layers import PMA
    torch.manual_seed(0)
    B, N, d, H, k = 4, 11, 16, 2, 3
    pma = PMA(d, num_seeds=k, num_heads=H).eval()
    S, mask = torch.randn(B, N, d), torch.rand(B, N) > 0.4
    mask[0] = False
    mask[1, 0] = True
    q = pma.q_proj(pma.seeds).view(1, k, H, d // H).transpose(1, 2)
    key = pma.k_proj(S).view(B, N, H, d // H).transpose(1, 2)
    val = pma.v_proj(S).view(B, N, H, d // H).transpose(1, 2)
    has_key = mask.any(-1)
    scores = (q @ key.transpose(-2, -1) / math.sqrt(d // H)).masked_fill(
        ~(mask | ~has_key[:, None])[:, None, None, :], float("-inf"))
    plain = pma.out_proj((scores.softmax(-1) @ val).transpose(1, 2).reshape(B, k, d)) * has_key[:, None, None]
    assert torch.allclose(pma(S, mask), plain, atol=1e-6)


def test_pffn_low_rank_product_equals_the_per_sample_weight(monkeypatch):
    from interformer_fuxi.layers import PFFN
    torch.manual_seed(0)
    pffn = PFFN(16, num_summary_tokens=4)
    X_sum, S = torch.randn(5, 4, 16), torch.randn(5, 9, 16)
    results = []
    for low_rank in (True, False):
        pffn.low_rank_product = low_rank
        x, s = X_sum.clone().requires_grad_(True), S.clone().requires_grad_(True)
        out = pffn(x, s)
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(),
                                    [x, s, pffn.weight])
        results.append([out.detach()] + list(grads))
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)

    # taken where it saves FLOPs (2 n_sum < d), not where the d x d weight is cheaper
    def refuse(*args):
        raise AssertionError("d x d weight built")
    pffn.low_rank_product = True
    monkeypatch.setattr(pffn, "personal_weight", refuse)
    pffn(X_sum, S)
    wide = PFFN(8, num_summary_tokens=4)
    monkeypatch.setattr(wide, "personal_weight", refuse)
    with pytest.raises(AssertionError, match="d x d weight built"):
        wide(torch.randn(2, 4, 8), torch.randn(2, 3, 8))


def test_sequence_tokens_merged_once_per_distinct_ids_equal_the_per_position_merge():
    data = batch(FMAP, size=48, lengths=torch.arange(48) % 11)  # padding and short histories
    item, cate = FMAP.get_column_index("item_history"), FMAP.get_column_index("cate_history")
    data[::2, item] = data[1::2, item]  # repeated histories, so ids repeat across rows
    data[::2, cate] = data[1::2, cate]
    dedup, plain = build(InterFormer), build(InterFormer, dedup_sequence_tokens=False)
    plain.load_state_dict(dedup.state_dict())
    assert dedup.feature_arch.dedup_radix is not None and plain.feature_arch.dedup_radix is None
    inputs = dedup.get_inputs(data)
    ids = torch.stack([inputs[f] for f in dedup.feature_arch.sequence_fields], dim=-1).long()
    assert torch.unique(ids.reshape(-1, 2), dim=0).shape[0] < ids.shape[0] * ids.shape[1] / 4
    assert torch.allclose(dedup.feature_arch.merge_sequence(ids), plain.feature_arch.merge_sequence(ids), atol=1e-6)
    predicts_and_trains_alike(dedup, plain, data)  # gradients too: the same training


def test_pma_hand_written_backward_equals_autograd(monkeypatch):
    import interformer_fuxi.layers.pma as pma_module
    from interformer_fuxi.layers import PMA
    g = torch.Generator().manual_seed(0)
    S = torch.randn(3, 7, 8, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.randn(4, 8, generator=g, dtype=torch.float64, requires_grad=True)
    attn_mask = (torch.rand(3, 7, 1, generator=g) > 0.4)
    attn_mask[:, 0] = True
    assert torch.autograd.gradcheck(lambda S, q: pma_module._SeedPool.apply(S, q, attn_mask, 0.5), (S, q))

    torch.manual_seed(0)
    pma = PMA(16, num_seeds=2, num_heads=2)
    S, mask = torch.randn(5, 11, 16), torch.rand(5, 11) > 0.4
    mask[0] = False  # an empty row
    mask[1, 0] = True
    results = []
    # the C++ kernel (CPU default), the backward by hand in PyTorch ops, and autograd's
    for by_hand, fused in ((True, True), (True, False), (False, False)):
        pma.pool_backward_by_hand, pma.fused_cpu_pool = by_hand, fused
        x = S.clone().requires_grad_(True)
        out = pma(x, mask)
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(),
                                    [x] + list(pma.parameters()))
        results.append([out.detach()] + list(grads))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)

    # attention dropout while training: the plain path, whose dropout sits between softmax and pooling
    def refuse(*args):
        raise AssertionError("hand-written pooling used under attention dropout")
    monkeypatch.setattr(pma_module._SeedPool, "apply", refuse)
    monkeypatch.setattr(pma_module, "fused_seed_pool", refuse)
    PMA(16, num_seeds=2, num_heads=2, attention_dropout=0.5).train()(S, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # and under autocast (mixed dtypes)
        PMA(16, num_seeds=2, num_heads=2)(S, mask).float().sum().backward()


# --- rows grouped by history length (skip_padding) ---------------------------------------------

LONG_FMAP = feature_map(dense=1, sequences=(("item_history", "item_id"), ("cate_history", "cate_id")), max_len=40)
# empty, full, short and mixed histories
LONG_LENGTHS = torch.cat([torch.zeros(3), torch.full((5,), 40),
                          torch.randint(1, 4, (100,), generator=torch.Generator().manual_seed(0)),
                          torch.randint(0, 41, (40,), generator=torch.Generator().manual_seed(1))]).long()


def _groups(mask):
    return [(None if rows is None else rows.tolist(), lo, hi) for rows, lo, hi in length_groups(mask)]


def test_length_groups_partition_the_rows_and_cover_every_valid_position():
    for padding in ("post", "pre"):
        mask = torch.arange(40).unsqueeze(0) < LONG_LENGTHS.unsqueeze(1)
        mask = mask if padding == "post" else mask.flip(1)
        groups = length_groups(mask)
        assert len(groups) >= 2
        rows = torch.cat([r for r, _, _ in groups])
        assert sorted(rows.tolist()) == list(range(len(LONG_LENGTHS)))  # each row exactly once
        for r, lo, hi in groups:
            assert not mask[r][:, :lo].any() and not mask[r][:, hi:].any()
            assert mask[r][:, lo:hi].any(0).all() or not mask[r].any()  # no column wasted at the edges
        short = next(g for g in groups if len(g[0]) >= 100)  # the 1-3 item histories share a short window
        assert short[2] - short[1] == 3 and (short[1] == 0 if padding == "post" else short[2] == 40)


def test_length_groups_keep_one_group_when_splitting_does_not_pay():
    full = torch.ones(8, 40, dtype=torch.bool)
    assert _groups(full) == [(None, 0, 40)]
    assert _groups(torch.zeros(4, 40, dtype=torch.bool)) == [(None, 0, 1)]  # no history at all
    # 3 and 4 items: one more column costs less than one more pass of every op
    similar = torch.arange(40).unsqueeze(0) < torch.tensor([[3], [4]]).repeat(50, 1)
    assert _groups(similar) == [(None, 0, 4)]
    few_long = torch.arange(40).unsqueeze(0) < torch.tensor([[2]] * 500 + [[40]] * 20)
    assert [(len(r), lo, hi) for r, lo, hi in length_groups(few_long)] == [(500, 0, 2), (20, 0, 40)]


@pytest.mark.parametrize("mode", ["int", "sep", "s2n", "n2s"])
@pytest.mark.parametrize("padding", ["post", "pre"])
def test_rows_grouped_by_length_give_the_predictions_and_gradients_of_the_padded_batch(mode, padding, monkeypatch):
    import interformer_fuxi.layers.grouping as grouping
    monkeypatch.setattr(grouping, "GROUP_COST", 0.0)  # as many groups as the bins allow
    data = batch(LONG_FMAP, size=len(LONG_LENGTHS), lengths=LONG_LENGTHS, padding=padding, seed=3)
    torch.manual_seed(0)
    grouped = InterFormer(LONG_FMAP, **dict(MODEL_DEFAULTS, interleave_mode=mode))
    padded = InterFormer(LONG_FMAP, **dict(MODEL_DEFAULTS, interleave_mode=mode, skip_padding=False))
    padded.load_state_dict(grouped.state_dict())
    inputs = grouped.get_inputs(data)
    mask = torch.stack([inputs[f] for f in grouped.feature_arch.sequence_fields], -1).ne(0).any(-1)
    assert len(length_groups(mask, grouped.cross_arch.num_cls_tokens)) >= 3
    y_grouped, y_padded = grouped(data)["y_pred"], padded(data)["y_pred"]
    assert torch.allclose(y_grouped, y_padded, atol=1e-6)
    params = [p for p in grouped.parameters() if p.requires_grad]
    g_grouped = torch.autograd.grad(y_grouped.sum(), params, allow_unused=True)
    g_padded = torch.autograd.grad(y_padded.sum(), [p for p in padded.parameters() if p.requires_grad],
                                   allow_unused=True)
    for a, b in zip(g_grouped, g_padded):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    for _ in range(3):  # and the same training
        grouped.train_step(data)
        padded.train_step(data)
    assert torch.allclose(predictions(grouped, data), predictions(padded, data), atol=1e-5)


def test_rows_grouped_by_length_do_a_fraction_of_the_work_on_short_histories():
    lengths = torch.cat([torch.randint(1, 6, (120,), generator=torch.Generator().manual_seed(0)),
                         torch.full((8,), 40)])
    data = batch(LONG_FMAP, size=len(lengths), lengths=lengths)
    tokens = {}
    for skip in (True, False):
        model = InterFormer(LONG_FMAP, **dict(MODEL_DEFAULTS, skip_padding=skip))
        seen = []
        model.layers[0].sequence_arch.register_forward_pre_hook(lambda m, args: seen.append(args[1].shape[:2]))
        with torch.no_grad():
            model(data)
        tokens[skip] = sum(rows * width for rows, width in seen)
    assert tokens[False] == 128 * (4 + 40)  # CLS and every slot
    assert tokens[True] <= 120 * (4 + 5) + 8 * (4 + 40)  # CLS and each group's window


# --- fused CPU attention (C++ kernel) ----------------------------------------------------------

def _sdpa_and_grads(attend, q, k, v, mask, weights):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = attend(q, k, v, mask)
    return [out.detach()] + list(torch.autograd.grad((out * weights).sum(), (q, k, v)))


@pytest.mark.parametrize("dh", [8, 16])
@pytest.mark.parametrize("N", [1, 5, 16, 17, 104, 128])
def test_fused_cpu_attention_equals_scaled_dot_product_attention(dh, N):
    import torch.nn.functional as F
    from interformer_fuxi.layers.fused_attention import fused_attention
    g = torch.Generator().manual_seed(N * dh)
    B, H = 3, 2
    qkv = torch.randn(B, N, 3, H, dh, generator=g)  # strided q, k, v, as the projection lays them out
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
    weights = torch.randn(B, H, N, dh, generator=g)
    for mask in (None, torch.rand(B, N, generator=g) > 0.5):
        if mask is not None:
            mask[:, -1] = True  # every row needs a valid key
            mask[0] = torch.arange(N) == N - 1  # one key only

        def plain(q, k, v, m):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=None if m is None else m.view(B, 1, 1, N))

        def fused(q, k, v, m):
            return fused_attention(q, k, v, m, dh ** -0.5)
        for a, b in zip(_sdpa_and_grads(fused, q, k, v, mask, weights), _sdpa_and_grads(plain, q, k, v, mask, weights)):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    out = fused_attention(q, k, v, None, dh ** -0.5)
    assert out.transpose(1, 2).is_contiguous()  # [B, N, H, dh] memory: the output projection reads it as is


def test_fused_cpu_attention_keeps_the_layer_and_interformer_training():
    torch.manual_seed(0)
    B, N, d, H = 5, 12, 32, 2
    mha = RotaryMultiheadAttention(d, H)
    x, mask = torch.randn(B, N, d), torch.rand(B, N) > 0.4
    mask[0] = False  # an empty row: zero output
    mask[1] = True
    results = []
    for fused in (True, False):
        mha.fused_cpu_attention = fused
        xx = x.clone().requires_grad_(True)
        out = mha(xx, mask, valid_positions(mask))
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(),
                                    [xx] + list(mha.parameters()))
        results.append([out.detach()] + list(grads))
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert results[0][0][0].abs().max() == 0

    trains_alike_without(RotaryMultiheadAttention, "fused_cpu_attention")


def test_fused_cpu_attention_runs_only_where_it_applies(monkeypatch):
    from interformer_fuxi.layers import fused_attention as module
    q = torch.randn(2, 4, 20, 16)
    assert module.fused_attention_applies(q, 0.0)
    assert not module.fused_attention_applies(q, 0.1)                        # attention dropout
    assert not module.fused_attention_applies(torch.randn(2, 4, 129, 16), 0.0)  # more tokens than it holds
    for dh in (4, 32, 64):  # head widths it lacks (at 32 and up the flash kernel's GEMMs are faster)
        assert not module.fused_attention_applies(torch.randn(2, 4, 20, dh), 0.0)
    assert not module.fused_attention_applies(q.double(), 0.0)
    assert not module.fused_attention_applies(q.to("meta"), 0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not module.fused_attention_applies(q, 0.0)
    calls = []
    monkeypatch.setattr(module._FusedAttention, "apply", lambda *args: calls.append(1) or args[0])
    mha = RotaryMultiheadAttention(64, 4)
    mha(torch.randn(2, 20, 64))
    assert calls == [1]
    mha.fused_cpu_attention = False
    mha(torch.randn(2, 20, 64))
    assert calls == [1]
    monkeypatch.setenv("INTERFORMER_CPU_ATTENTION", "0")
    assert not module.fused_attention_applies(q, 0.0)


def _pffn_block_and_grads(S, X_sum, W, norm, fused):
    from interformer_fuxi.layers.fused_pffn import fused_pffn_block
    S, X_sum, W = (t.detach().clone().requires_grad_(True) for t in (S, X_sum, W))
    if fused:
        out = fused_pffn_block(S, X_sum, W, norm)
    else:
        out = S + torch.bmm(norm(S), X_sum.transpose(1, 2)) @ W
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(),
                                [S, X_sum, W, norm.weight, norm.bias])
    return [out.detach()] + list(grads)


@pytest.mark.parametrize("B,N,d,n_sum", [(5, 9, 16, 4), (3, 104, 64, 4), (2, 1, 32, 1), (4, 7, 256, 16)])
def test_fused_pffn_block_equals_its_ops(B, N, d, n_sum):
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(d)
    torch.nn.init.normal_(norm.weight)  # not the identity affine
    torch.nn.init.normal_(norm.bias)
    S = torch.randn(B, N, d) * 3 + 1  # tokens with an offset and a scale for the norm to remove
    X_sum, W = torch.randn(B, n_sum, d), torch.randn(n_sum, d) / d
    fused = _pffn_block_and_grads(S, X_sum, W, norm, True)
    plain = _pffn_block_and_grads(S, X_sum, W, norm, False)
    for a, b in zip(fused, plain):
        assert torch.allclose(a, b, atol=1e-4 * b.abs().max().item(), rtol=1e-4)
    # a strided X_sum (a slice of the Cross Arch's summaries) reads the same
    wide = torch.cat([X_sum, torch.randn(B, 2, d)], dim=1)[:, :n_sum]
    assert torch.allclose(_pffn_block_and_grads(S, wide, W, norm, True)[0], fused[0])


def test_fused_pffn_block_keeps_interformer_training():
    from interformer_fuxi.arches.sequence_arch import SequenceArch
    fused = trains_alike_without(SequenceArch, "fused_cpu_pffn")
    arches = [m for m in fused.modules() if isinstance(m, SequenceArch)]
    assert arches and all(a._pffn_fuses(torch.randn(2, 4, 16), torch.randn(2, 3, 16)) for a in arches)


def test_fused_pffn_block_runs_only_where_it_applies(monkeypatch):
    from interformer_fuxi.arches.sequence_arch import SequenceArch
    from interformer_fuxi.layers import fused_pffn as module
    norm, S, X_sum, W = torch.nn.LayerNorm(64), torch.randn(2, 5, 64), torch.randn(2, 4, 64), torch.randn(4, 64)
    assert module.fused_pffn_applies(S, X_sum, W, norm)
    assert not module.fused_pffn_applies(S.double(), X_sum.double(), W.double(), norm.double())
    assert not module.fused_pffn_applies(S.to("meta"), X_sum, W, norm)
    assert not module.fused_pffn_applies(torch.randn(2, 5, 24), torch.randn(2, 4, 24), torch.randn(4, 24),
                                         torch.nn.LayerNorm(24))  # d not a multiple of 16
    assert not module.fused_pffn_applies(S, torch.randn(2, 17, 64), torch.randn(17, 64), norm)  # n_sum > 16
    assert not module.fused_pffn_applies(S, X_sum, W, torch.nn.LayerNorm(64, elementwise_affine=False))
    assert not module.fused_pffn_applies(S, X_sum, W, torch.nn.Identity())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not module.fused_pffn_applies(S, X_sum, W, norm)
    # the Sequence Arch's other PFFN forms and its post-norm variant keep their ops
    for kwargs in (dict(pffn_form="mlp"), dict(personalized=False), dict(residual_norm=False)):
        arch = SequenceArch(64, 4, **kwargs)
        assert not arch._pffn_fuses(X_sum, S), kwargs
    arch = SequenceArch(64, 4)
    assert arch._pffn_fuses(X_sum, S)
    arch.fused_cpu_pffn = False
    assert not arch._pffn_fuses(X_sum, S)
    monkeypatch.setenv("INTERFORMER_CPU_PFFN", "0")
    assert not module.fused_pffn_applies(S, X_sum, W, norm)


@pytest.mark.parametrize("B,N,d,J", [(5, 9, 16, 4), (3, 104, 64, 8), (2, 1, 32, 1), (2, 300, 256, 16)])
def test_fused_seed_pool_equals_its_ops(B, N, d, J):
    import interformer_fuxi.layers.pma as pma_module
    from interformer_fuxi.layers.fused_seed_pool import fused_seed_pool
    torch.manual_seed(0)
    S, q = torch.randn(B, N, d) * 2, torch.randn(J, d)
    mask = torch.rand(B, N) > 0.3
    mask[:, -1] = True  # a valid key per row
    mask[0] = True      # and a full row
    results = []
    for fused in (True, False):
        x, qq = S.clone().requires_grad_(True), q.clone().requires_grad_(True)
        out = (fused_seed_pool(x, qq, mask, 0.3) if fused
               else pma_module._SeedPool.apply(x, qq, mask.unsqueeze(-1), 0.3))
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), [x, qq])
        results.append([out.detach()] + list(grads))
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-5 * max(b.abs().max().item(), 1.0), rtol=1e-4)
    # a masked token gets no weight: changing it changes nothing
    moved = S.clone()
    moved[~mask] = 1e3
    assert torch.allclose(fused_seed_pool(moved, q, mask, 0.3), results[0][0], atol=1e-5)


def test_fused_seed_pool_keeps_interformer_training():
    from interformer_fuxi.layers import PMA
    trains_alike_without(PMA, "fused_cpu_pool")


def test_fused_seed_pool_runs_only_where_it_applies(monkeypatch):
    from interformer_fuxi.layers import fused_seed_pool as module
    S, q = torch.randn(2, 5, 64), torch.randn(8, 64)
    assert module.fused_seed_pool_applies(S, q)
    assert not module.fused_seed_pool_applies(S.double(), q.double())
    assert not module.fused_seed_pool_applies(S.to("meta"), q)
    assert not module.fused_seed_pool_applies(torch.randn(2, 5, 24), torch.randn(8, 24))  # d not a multiple of 16
    assert not module.fused_seed_pool_applies(S, torch.randn(17, 64))                     # more queries than lanes
    assert not module.fused_seed_pool_applies(torch.randn(1, 1025, 64), q)               # more tokens than it holds
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not module.fused_seed_pool_applies(S, q)
    monkeypatch.setenv("INTERFORMER_CPU_POOL", "0")
    assert not module.fused_seed_pool_applies(S, q)


def test_pma_reads_gathered_tokens_alongside_its_pooling_on_every_path():
    from interformer_fuxi.layers import PMA
    torch.manual_seed(0)
    S, mask = torch.randn(4, 9, 32), torch.rand(4, 9) > 0.3
    mask[:, 0] = True
    index = torch.tensor([[0, 1, 8], [0, 1, 3], [0, 1, 1], [0, 1, 0]])  # repeats add up
    results = []
    for seeds, by_hand, fused in ((2, True, True), (2, True, False), (2, False, False), (0, True, True)):
        torch.manual_seed(1)
        pma = PMA(32, num_seeds=seeds, num_heads=2)
        pma.pool_backward_by_hand, pma.fused_cpu_pool = by_hand, fused
        x = S.clone().requires_grad_(True)
        out, tokens = pma(x, mask, gather=index)
        assert torch.equal(tokens, S.gather(1, index.unsqueeze(-1).expand(-1, -1, 32)))
        weights = torch.linspace(-1, 1, tokens.numel()).view_as(tokens)
        g_tokens, = torch.autograd.grad((tokens * weights).sum() + out.sum(), [x])
        # the pooling's own gradient (none without seeds)
        g_out = torch.autograd.grad(pma(x, mask).sum(), [x])[0] if seeds else torch.zeros_like(S)
        expected = g_out + torch.zeros_like(S).scatter_add_(1, index.unsqueeze(-1).expand(-1, -1, 32), weights)
        assert torch.allclose(g_tokens, expected, atol=1e-6), (seeds, by_hand, fused)
        results.append(out.detach())
    assert torch.allclose(results[0], results[1], atol=1e-6) and torch.allclose(results[0], results[2], atol=1e-6)


def _attention_layer():
    return RotaryMultiheadAttention(32, 2).eval(), (torch.randn(3, 10, 32),), "fused_cpu_attention"


def _pffn_layer():
    from interformer_fuxi.arches.sequence_arch import SequenceArch
    inputs = (torch.randn(3, 4, 32), torch.randn(3, 10, 32), torch.ones(3, 10, dtype=torch.bool))
    return SequenceArch(32, 4, use_mha=False), inputs, "fused_cpu_pffn"


def _pool_layer():
    from interformer_fuxi.layers import PMA
    return PMA(32, num_seeds=2, num_heads=2), (torch.randn(3, 10, 32), torch.ones(3, 10, dtype=torch.bool)), \
        "fused_cpu_pool"


@pytest.mark.parametrize("module_name,kernel,library,layer,message", [
    ("fused_attention", "fused_attention_kernel", "interformer_attention", _attention_layer,
     "Fused CPU attention unavailable, using scaled_dot_product_attention"),
    ("fused_pffn", "fused_pffn_kernel", "interformer_pffn_block", _pffn_layer,
     "Fused CPU PFFN block unavailable, using the PyTorch ops"),
    ("fused_seed_pool", "fused_seed_pool_kernel", "interformer_seed_pool", _pool_layer,
     "Fused CPU seed pooling unavailable, using the PyTorch ops"),
])
def test_cpu_kernels_fall_back_with_one_warning_when_they_cannot_be_built(monkeypatch, caplog, module_name, kernel,
                                                                         library, layer, message):
    import importlib

    import torch.utils.cpp_extension
    module = importlib.import_module(f"interformer_fuxi.layers.{module_name}")

    def no_compiler(*args, **kwargs):
        raise RuntimeError(f"Error building extension '{library}_avx512'\nmore lines")
    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_compiler)
    monkeypatch.setattr(getattr(module, kernel), "_built", {})  # a fresh build, undone after the test
    torch.manual_seed(0)
    net, inputs, switch = layer()
    with caplog.at_level("WARNING"):
        out = net(*inputs)
        net(*inputs)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"{message}: Error building extension '{library}_avx512'"]
    setattr(net, switch, False)
    assert torch.allclose(out, net(*inputs), atol=1e-6)
