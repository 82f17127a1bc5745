"""InterFormer's behaviour: masks, information flow per mode, ablations, learning, determinism."""
import itertools

import pytest
import torch

from interformer_fuxi import InterFormer
from interformer_fuxi.arches import SequenceArch
from interformer_fuxi.layers import INTERACTIONS
from interformer_fuxi.models.interformer import INTERLEAVE_MODES

from synthetic import MODEL_DEFAULTS, batch, feature_map, membership_batch, repad


def build(fmap=None, seed=0, **kwargs):
    torch.manual_seed(seed)
    params = dict(MODEL_DEFAULTS, num_layers=2)
    params.update(kwargs)
    return InterFormer(fmap or feature_map(), **params)


def predict(model, data):
    model.eval()
    with torch.no_grad():
        return model(data)["y_pred"].squeeze(1)


def states(model, data):
    model.eval()
    with torch.no_grad():
        return model.encode(model.get_inputs(data))[2]["states"]


# ---------------------------------------------------------------- masks and padding
@pytest.mark.parametrize("mode", ["int", "sole"])
def test_pre_and_post_padding_give_the_same_prediction(mode):
    fmap = feature_map(sequences=(("item_history", "item_id"), ("cate_history", "cate_id")))
    model = build(fmap, interleave_mode=mode, early_aggregation="mlp")
    post = batch(fmap, size=16, padding="post")
    pre = repad(fmap, post, "pre")
    assert not torch.equal(pre, post)
    assert torch.allclose(predict(model, pre), predict(model, post), atol=1e-5)


def test_ids_at_padded_positions_change_nothing():
    fmap = feature_map()
    model = build(fmap)
    data = batch(fmap, size=16, lengths=torch.arange(16) % 11)
    idx = torch.tensor(fmap.get_column_index("item_history"))
    # FuxiCTR's padding id is 0; the mask comes from the ids, so write a *valid-looking*
    # embedding at padded slots by making the padding row of the table non-zero.
    with torch.no_grad():
        model.feature_arch.embedding_layer.embedding_layers["item_id"].weight[0].fill_(3.0)
    changed = predict(model, data)
    with torch.no_grad():
        model.feature_arch.embedding_layer.embedding_layers["item_id"].weight[0].fill_(-5.0)
    assert torch.allclose(predict(model, data), changed, atol=1e-6)
    # and the valid items do matter
    other = data.clone()
    other[:, idx[0]] = torch.where(other[:, idx[0]] > 0, (other[:, idx[0]] % 40) + 1, 0)
    assert (predict(model, other) - changed).abs().max() > 1e-7


@pytest.mark.parametrize("mode", INTERLEAVE_MODES)
def test_an_empty_history_gives_finite_predictions_in_training_and_eval(mode):
    fmap = feature_map()
    model = build(fmap, interleave_mode=mode, early_aggregation="mha", net_dropout=0.1, attention_dropout=0.1)
    data = batch(fmap, size=8, lengths=torch.zeros(8, dtype=torch.long))
    model.train()
    out = model(data)["y_pred"]
    loss = model.compute_loss({"y_pred": out}, model.get_labels(data))
    loss.backward()
    assert torch.isfinite(out).all() and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert torch.isfinite(predict(model, data)).all()


def test_recent_tokens_reach_the_summary_from_the_newest_valid_items():
    fmap = feature_map()
    model = build(fmap, num_pma_tokens=0, num_cls_tokens=1, num_recent_tokens=2, use_gating=False)
    cross = model.layers[0].cross_arch
    S = torch.arange(1 + 6, dtype=torch.float).view(1, 7, 1).expand(2, 7, 16).clone()
    mask = torch.tensor([[True, True, True, True, False, False, False],   # post-padded, 3 items
                         [True, False, False, False, False, True, True]])  # pre-padded, 2 items
    S_sum = cross.summarize_sequence(S, mask)
    assert S_sum[0, 1:, 0].tolist() == [3.0, 2.0]  # newest first
    assert S_sum[1, 1:, 0].tolist() == [6.0, 5.0]


# ---------------------------------------------------------------- information flow
def perturbed_pair(fmap, what):
    data = batch(fmap, size=8, lengths=torch.full((8,), 6))
    other = data.clone()
    names = ["item_history"] if what == "sequence" else ["item_id", "cate_id"]
    for name in names:
        idx = fmap.get_column_index(name)
        other[:, idx] = torch.where(other[:, idx] > 0, (other[:, idx] + 7) % 49 + 1, 0)
    return data, other


@pytest.mark.parametrize("mode, seq_to_x, x_to_seq", [
    ("int", True, True), ("n2s", False, True), ("s2n", True, False), ("sep", False, False)])
def test_information_flows_only_where_the_mode_allows(mode, seq_to_x, x_to_seq):
    fmap = feature_map()
    model = build(fmap, interleave_mode=mode, num_layers=3)
    data, seq_changed = perturbed_pair(fmap, "sequence")
    _, x_changed = perturbed_pair(fmap, "non-sequence")
    base = states(model, data)
    for layer, ((X, _), (X2, _)) in enumerate(zip(base[1:], states(model, seq_changed)[1:])):
        assert (not torch.allclose(X, X2, atol=1e-6)) == seq_to_x, f"layer {layer + 1}"
    for layer, ((_, S), (_, S2)) in enumerate(zip(base[1:], states(model, x_changed)[1:])):
        assert (not torch.allclose(S, S2, atol=1e-6)) == x_to_seq, f"layer {layer + 1}"


def test_sole_has_no_sequence_arch_and_reads_the_sequence_early():
    fmap = feature_map()
    model = build(fmap, interleave_mode="sole")
    assert not any(isinstance(m, SequenceArch) for m in model.modules())
    data, seq_changed = perturbed_pair(fmap, "sequence")
    assert not torch.allclose(predict(model, data), predict(model, seq_changed))


def test_the_two_arches_of_a_layer_read_only_that_layers_inputs():
    fmap = feature_map()
    model = build(fmap, num_layers=2)
    model.eval()
    X, S, mask = model.feature_arch(model.get_inputs(batch(fmap, size=4)))
    S, mask = model.prepend_cls(X, S, mask)
    layer = model.layers[1]
    with torch.no_grad():
        X1, S1, _ = layer(X, S, mask)
        X_sum, S_sum = layer.cross_arch(X, S, mask)
        assert torch.allclose(X1, layer.interaction_arch(X, S_sum))
        assert torch.allclose(S1, layer.sequence_arch(X_sum, S, mask))


# ---------------------------------------------------------------- ablations and switches
def n_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("switch", [
    dict(num_pma_tokens=0), dict(num_recent_tokens=0), dict(use_gating=False),
    dict(use_pffn=False), dict(use_mha=False)])
def test_ablations_remove_what_they_name_and_still_train(switch):
    fmap = feature_map()
    full, ablated = build(fmap), build(fmap, **switch)
    assert n_params(ablated) < n_params(full)
    data = batch(fmap, size=64)
    losses = train_steps(ablated, data, steps=30)
    assert losses[-1] < losses[0]


def test_ablations_remove_the_modules():
    assert build(num_pma_tokens=0).layers[0].cross_arch.pma.num_seeds == 0
    assert build(use_pffn=False).layers[0].sequence_arch.pffn is None
    assert build(use_mha=False).layers[0].sequence_arch.mha is None
    assert n_params(build(use_gating=False).layers[0].cross_arch.x_gating) == 0


def test_bad_switch_values_are_rejected_with_the_key_name():
    with pytest.raises(ValueError, match="interleave_mode"):
        build(interleave_mode="both")
    with pytest.raises(ValueError, match="early_aggregation"):
        build(interleave_mode="sole", early_aggregation="max")
    with pytest.raises(ValueError, match="DOTS"):
        build(interaction_arch="DOTS")
    with pytest.raises(ValueError, match="pma_query"):
        build(pma_query="target")
    with pytest.raises(ValueError, match="history_match .* int or n2s"):
        build(history_match=True, interleave_mode="sep")
    with pytest.raises(ValueError, match="target_match .* int or n2s"):
        build(target_match=True, interleave_mode="s2n")
    with pytest.raises(ValueError, match="target_match needs .*share_embedding"):
        build(feature_map(sequences=(("item_history", None),)), target_match=True)


def test_a_personalized_pma_query_starts_as_the_papers_and_learns_from_the_target():
    """``pma_query: personalized`` offsets the PMA seeds by a map of X_sum that starts at zero:
    the same predictions as the paper's shared queries at first, and a gradient that reaches
    the map, so the pooling can come to depend on the sample's target item."""
    data = batch(feature_map(), size=16)
    paper, personal = build(), build(pma_query="personalized")
    missing = personal.load_state_dict(paper.state_dict(), strict=False).missing_keys
    assert missing and all(".pma_query." in k for k in missing)
    assert torch.allclose(predict(paper, data), predict(personal, data), atol=1e-6)
    personal.train()
    personal(data)["y_pred"].sum().backward()
    grads = [p.grad for n, p in personal.named_parameters() if ".pma_query.weight" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_without_the_merge_bias_distinct_items_start_as_distinct_tokens():
    """With small embeddings (std 0.05) the MaskNet merge's output bias dominates: at
    initialisation every item's merged, normalised history token points the same way.
    ``merge_bias: false`` keeps them apart."""
    fmap = feature_map(vocab=50)
    ids = torch.arange(1, 50).view(1, 49, 1)
    cosines = {}
    for bias in (True, False):
        with torch.no_grad():
            S = torch.nn.functional.normalize(build(fmap, merge_bias=bias).feature_arch.merge_sequence(ids)[0], dim=-1)
        cosines[bias] = (S @ S.T)[~torch.eye(49, dtype=torch.bool)].mean().item()
    assert cosines[True] > 0.99 and abs(cosines[False]) < 0.1, cosines


def test_history_match_starts_as_the_papers_and_learns():
    """``history_match`` adds a zero-initialised map of history-to-X dot products: the same
    predictions as without it at first (on the padded and the length-grouped paths), and a
    gradient that reaches the map."""
    data = batch(feature_map(), size=16)
    paper, matched = build(), build(history_match=True)
    missing = matched.load_state_dict(paper.state_dict(), strict=False).missing_keys
    assert missing == ["history_match.weight"]
    for skip in (True, False):
        paper.skip_padding = matched.skip_padding = skip
        assert torch.allclose(predict(paper, data), predict(matched, data), atol=1e-6)
    matched.train()
    matched(data)["y_pred"].sum().backward()
    assert matched.history_match.weight.grad.abs().sum() > 0


def test_target_match_pairs_shared_tables_starts_as_the_papers_and_learns():
    """``target_match`` compares each history field with the non-sequence field whose table it
    shares, through a zero-initialised map: the same predictions as without it at first (padded
    and length-grouped paths); once the map is non-zero both paths still agree, and the
    gradient reaches the map."""
    fmap = feature_map(sequences=(("item_history", "item_id"), ("cate_history", "cate_id")))
    data = batch(fmap, size=16)
    paper, matched = build(fmap), build(fmap, target_match=True)
    assert matched.feature_arch.match_pairs == [(0, "item_id"), (1, "cate_id")]
    missing = matched.load_state_dict(paper.state_dict(), strict=False).missing_keys
    assert missing == ["target_match.weight"]
    for skip in (True, False):
        paper.skip_padding = matched.skip_padding = skip
        assert torch.allclose(predict(paper, data), predict(matched, data), atol=1e-6)
    with torch.no_grad():
        matched.target_match.weight.normal_(std=0.1)
    for skip in (True, False):  # both paths agree with the map on too
        matched.skip_padding = skip
        scores = predict(matched, data)
        assert skip or torch.allclose(scores, grouped, atol=1e-5)
        grouped = scores
    assert not torch.allclose(predict(paper, data), scores, atol=1e-4)
    matched.train()
    matched(data)["y_pred"].sum().backward()
    assert matched.target_match.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["int", "sep", "sole"])
def test_target_attention_adds_one_token_per_shared_table_that_reads_the_target_and_the_history(mode):
    """``target_attention`` appends DIN's pooling of the raw history, one token per pair of a
    history field and the non-sequence field sharing its table. The token reads the target
    (a different target item moves it, with the rest of X fixed) and the valid history only
    (not the padding row); the padded and length-grouped paths agree; a row without
    history gets a finite score; the gradient reaches the attention MLP."""
    fmap = feature_map(sequences=(("item_history", "item_id"), ("cate_history", "cate_id")))
    model = build(fmap, interleave_mode=mode, target_attention=True)
    plain = build(fmap, interleave_mode=mode)
    data = batch(fmap, size=16, lengths=torch.arange(16) % 9)
    model.eval()
    with torch.no_grad():
        X, ids, mask = model.tokens(model.get_inputs(data))
        X0, _, _ = plain.tokens(plain.get_inputs(data))
        assert X.shape[1] == X0.shape[1] + 2
        target = data.clone()
        col = fmap.get_column_index("item_id")
        target[:, col] = target[:, col] % 40 + 1
        moved = model.tokens(model.get_inputs(target))[0]
        n = X0.shape[1]
        has = mask.any(-1)
        assert not torch.allclose(moved[has, n], X[has, n], atol=1e-5)  # the item pair's token
        assert torch.allclose(moved[:, n + 1], X[:, n + 1], atol=1e-6)  # the category pair's is the same
        # the padding row (id 0) made non-zero: padded positions still weigh nothing
        model.feature_arch.embedding_layer.embedding_layers["item_id"].weight[0].fill_(3.0)
        assert torch.allclose(model.tokens(model.get_inputs(data))[0], X, atol=1e-5)
    if mode != "sole":
        for skip in (True, False):
            model.skip_padding = skip
            scores = predict(model, data)
            assert skip or torch.allclose(scores, grouped, atol=1e-5)
            grouped = scores
    assert torch.isfinite(predict(model, batch(fmap, size=4, lengths=[0] * 4))).all()
    model.train()
    model(data)["y_pred"].sum().backward()
    grads = [p.grad for name, p in model.named_parameters() if name.startswith("target_attention.")]
    assert grads and all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_target_attention_needs_a_shared_table():
    with pytest.raises(ValueError, match="target_attention needs .*share_embedding"):
        build(feature_map(sequences=(("item_history", None),)), target_attention=True)


@pytest.mark.parametrize("mode", ["int", "sole"])
def test_first_order_starts_as_the_paper_and_learns_an_item_bias_outside_the_embedding_regularizer(mode):
    """``first_order`` adds a zero-initialised scalar per categorical value (and per numeric
    field) to the logit: the untrained model predicts as the paper's; on labels that only an
    item's identity decides, the item weights split by label; they train at 10x the model's
    rate, and FuxiCTR's whole-table embedding regulariser does not see them."""
    fmap = feature_map(dense=1, sparse=("item_id", "cate_id"))
    model = build(fmap, interleave_mode=mode, first_order=True, embedding_regularizer=1e-2)
    plain = build(fmap, interleave_mode=mode, embedding_regularizer=1e-2)
    data = batch(fmap, size=64)
    assert torch.allclose(predict(model, data), predict(plain, data))
    item = data[:, fmap.get_column_index("item_id")].long()
    data[:, -1] = (item % 2).float()  # odd items click
    with torch.no_grad():
        reg = model.regularization_loss()
        model.first_order.weights.weight.fill_(5.0)
        model.first_order.dense.weight.fill_(5.0)
        assert model.regularization_loss() == reg
        model.first_order.weights.weight.zero_()
        model.first_order.dense.weight.zero_()
    # the wide part trains at first_order_lr_scale (10) x the model's rate
    assert sorted(group["lr"] for group in model.optimizer.param_groups) == pytest.approx([1e-3, 1e-2])
    losses = train_steps(model, data, steps=30)
    assert losses[-1] < losses[0]
    w = model.first_order.weights.weight.squeeze(1)[:50]  # item_id's rows come first
    seen_odd, seen_even = item[item % 2 == 1].unique(), item[item % 2 == 0].unique()
    assert w[seen_odd].mean() > 0 > w[seen_even].mean()
    unseen = torch.ones(50, dtype=torch.bool)
    unseen[item.unique()] = False
    assert (w[unseen] == 0).all()  # only the rows in the batch moved


@pytest.mark.parametrize("interaction, mode", list(itertools.product(INTERACTIONS, INTERLEAVE_MODES)))
def test_every_interaction_and_mode_trains_on_dense_features_and_several_sequences(interaction, mode):
    fmap = feature_map(dense=1, sparse=("userid", "adgroup_id", "cate_id", "brand", "btag"),
                       sequences=(("cate_his", "cate_id"), ("brand_his", "brand"), ("btag_his", "btag")))
    model = build(fmap, interaction_arch=interaction, interleave_mode=mode, dhen_layers=2)
    assert model.feature_arch.num_tokens == 6  # one dense token + five sparse tokens
    losses = train_steps(model, batch(fmap, size=32), steps=2)
    assert all(torch.isfinite(torch.tensor(losses)))


# ---------------------------------------------------------------- learning and determinism
def train_steps(model, data, steps):
    model.train()
    losses = []
    for _ in range(steps):
        losses.append(model.train_step(data).item())
    return losses


def holdout_auc(model, data):
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(data[:, -1].numpy(), predict(model, data).numpy())


def test_the_target_reaches_the_history_only_through_the_cross_arch():
    """Is the target item in the history? The interleaved model learns it (its target enters
    the Sequence Arch as X_sum); the same model without the exchange between arches ("sep",
    where only pooled summaries of the history meet the target) stays at chance."""
    fmap = feature_map(vocab=50, max_len=10)
    train, test = membership_batch(fmap, 8192, seed=0), membership_batch(fmap, 2048, seed=1)
    aucs = {}
    for mode, epochs in (("int", 16), ("sep", 10)):  # "int": 1.0 after 9 epochs here, at chance before 7
        model = build(fmap, num_layers=2, learning_rate=3e-3, interleave_mode=mode)
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))
            for start in range(0, len(train), 256):
                model.train_step(train[order[start:start + 256]])
            aucs[mode] = holdout_auc(model, test)
            if aucs[mode] > 0.95:
                break
    assert aucs["int"] > 0.95 and aucs["sep"] < 0.6, aucs


def test_training_drives_the_loss_near_zero_on_a_fixed_batch():
    fmap = feature_map(vocab=200)
    model = build(fmap, learning_rate=3e-3)
    data = batch(fmap, size=64, seed=3)
    losses = train_steps(model, data, steps=300)
    assert losses[-1] < 0.05 < losses[0]


def test_same_seed_same_predictions():
    fmap = feature_map()
    data = batch(fmap, size=32)
    preds = []
    for _ in range(2):
        model = build(fmap, seed=7, net_dropout=0.1)
        train_steps(model, data, steps=5)
        preds.append(predict(model, data))
    assert torch.equal(preds[0], preds[1])


def test_attention_maps_are_per_layer_and_respect_the_mask():
    fmap = feature_map()
    model = build(fmap, num_layers=3)
    data = batch(fmap, size=4, lengths=[0, 3, 7, 10])
    maps = model.attention_maps(data)
    assert len(maps) == 3
    n_cls = 4
    for w in maps:
        assert w.shape == (4, 2, n_cls + 10, n_cls + 10)
        assert torch.allclose(w.sum(-1), torch.ones(4, 2, n_cls + 10))
        assert w[1, :, :, n_cls + 3:].abs().max() == 0  # post-padded keys get no weight


def test_frozen_pretrained_embeddings_enter_as_projected_tokens(tmp_path):
    import h5py
    import numpy as np
    fmap = feature_map(sparse=("item_id", "item_emb"),
                       sequences=(("pos_items", "item_id"), ("pos_items_emb", "item_emb")))
    fmap.data_dir = str(tmp_path)
    for name in ("item_emb", "pos_items_emb"):
        fmap.features[name].update(embedding_dim=8)
    fmap.features["item_emb"].update(pretrained_emb="pretrained_emb.h5", freeze_emb=True)
    table = np.random.default_rng(0).normal(size=(50, 8)).astype("float32")
    with h5py.File(tmp_path / "pretrained_emb.h5", "w") as f:
        f.create_dataset("item_emb", data=table)
    model = build(fmap)
    emb = model.feature_arch.embedding_layer.embedding_layers
    assert emb["pos_items_emb"] is emb["item_emb"] and not emb["item_emb"].weight.requires_grad
    assert np.allclose(emb["item_emb"].weight[1:].numpy(), table[1:])
    assert set(model.feature_arch.projections) == {"item_emb", "pos_items_emb"}  # 8 -> 16
    data = batch(fmap, size=32)
    losses = train_steps(model, data, steps=20)
    assert losses[-1] < losses[0]
    assert np.allclose(emb["item_emb"].weight[1:].detach().numpy(), table[1:])  # still frozen


def test_a_frozen_table_of_the_model_width_is_still_projected(tmp_path):
    import h5py
    import numpy as np
    fmap = feature_map(sparse=("item_id", "item_emb"),
                       sequences=(("pos_items", "item_id"), ("pos_items_emb", "item_emb")))
    fmap.data_dir = str(tmp_path)
    fmap.features["item_emb"].update(pretrained_emb="pretrained_emb.h5", freeze_emb=True)
    with h5py.File(tmp_path / "pretrained_emb.h5", "w") as f:
        f.create_dataset("item_emb", data=np.ones((50, 16), dtype="float32"))
    model = build(fmap)  # embedding_dim 16 = the table's width
    assert set(model.feature_arch.projections) == {"item_emb", "pos_items_emb"}
    assert all(p.weight.requires_grad for p in model.feature_arch.projections.values())
