"""The paper's baselines built here (DOT, DCNv2, DHEN, WuKong, DIN, TransAct): learning, masking,
inputs, determinism."""
import pytest
import torch

from interformer_fuxi.models import DCNv2, DHEN, DIN, DOT, TransAct, WuKong
from interformer_fuxi.runner import run_expid

from synthetic import MODEL_DEFAULTS, batch, feature_map, repad

BASELINES = [DOT, DCNv2, DHEN, WuKong, DIN, TransAct]


def build(model_class, fmap, seed=0, **kwargs):
    torch.manual_seed(seed)
    return model_class(fmap, **dict(MODEL_DEFAULTS, **kwargs))


def predict(model, data):
    model.eval()
    with torch.no_grad():
        return model(data)["y_pred"].squeeze(1)


@pytest.mark.parametrize("expid", ["DOT_tiny", "DCNv2_tiny", "DHEN_tiny", "WuKong_tiny",
                                   "DIN_tiny", "TransAct_tiny"])
def test_trains_on_tiny_amazon_through_the_runner(project, expid):
    _, _, _, test = run_expid(project / "config", expid, overrides={"verbose": 0})
    assert test["AUC"] > 0.65 and test["gAUC"] > 0.6 and test["NE"] < 1.0


@pytest.mark.parametrize("model_class", BASELINES)
def test_padding_side_and_padding_contents_change_nothing(model_class):
    fmap = feature_map(sequences=(("item_history", "item_id"), ("cate_history", "cate_id")))
    model = build(model_class, fmap)
    post = batch(fmap, size=16, lengths=torch.arange(16) % 11)
    assert torch.allclose(predict(model, repad(fmap, post, "pre")), predict(model, post), atol=1e-6)
    before = predict(model, post)
    with torch.no_grad():
        model.feature_arch.embedding_layer.embedding_layers["item_id"].weight[0].fill_(4.0)
    assert torch.allclose(predict(model, post), before, atol=1e-6)


@pytest.mark.parametrize("model_class", BASELINES)
def test_dense_features_several_sequences_and_empty_histories(model_class):
    fmap = feature_map(dense=2, sparse=("userid", "adgroup_id", "cate_id", "brand"),
                       sequences=(("cate_his", "cate_id"), ("brand_his", "brand")))
    model = build(model_class, fmap)
    assert model.feature_arch.num_tokens == 1 + 4 + 2
    data = batch(fmap, size=32, lengths=torch.arange(32) % 3)  # includes empty histories
    model.train()
    losses = [model.train_step(data).item() for _ in range(20)]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


@pytest.mark.parametrize("model_class", BASELINES)
def test_same_seed_same_predictions(model_class):
    fmap = feature_map()
    data = batch(fmap, size=32)
    preds = []
    for _ in range(2):
        model = build(model_class, fmap, seed=3)
        model.train()
        for _ in range(3):
            model.train_step(data)
        preds.append(predict(model, data))
    assert torch.equal(preds[0], preds[1])


def test_dhen_baseline_shares_interformers_dhen_layer():
    from interformer_fuxi.layers import DHENLayer
    model = build(DHEN, feature_map(), dhen_layers=3)
    assert sum(isinstance(m, DHENLayer) for m in model.modules()) == 3


@pytest.mark.parametrize("structure", ["parallel", "stacked", "crossnet_only"])
@pytest.mark.parametrize("low_rank", [0, 8])
def test_dcnv2_structures_and_ranks_train(structure, low_rank):
    fmap = feature_map()
    model = build(DCNv2, fmap, model_structure=structure, low_rank=low_rank,
                  parallel_dnn_hidden_units=[32], stacked_dnn_hidden_units=[32])
    data = batch(fmap, size=64)
    model.train()
    losses = [model.train_step(data).item() for _ in range(30)]
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="model_structure"):
        build(DCNv2, fmap, model_structure="both")


def test_wukong_fm_block_compares_tokens_with_learned_mixtures():
    from interformer_fuxi.layers import WukongLayer
    torch.manual_seed(0)
    layer = WukongLayer(5, 8, num_fmb_tokens=4, num_lcb_tokens=3, fm_rank=3)
    X = torch.randn(2, 5, 8)
    W = layer.fm_projection.weight  # [n, k]
    expected = torch.bmm(X, X.transpose(1, 2)) @ W  # optimised FM: (X Xᵀ) W, [B, n, k]
    assert torch.allclose(torch.bmm(X, layer.fm_projection(X).transpose(1, 2)), expected, atol=1e-5)
    assert layer(X).shape == (2, 7, 8)


def test_din_summarises_a_group_from_its_valid_history_tokens_only():
    # One group [item_id, cate_id] <- [item_history, cate_history], as BARS configures DIN.
    fmap = feature_map(sequences=(("item_history", "item_id"), ("cate_history", "cate_id")))
    model = build(DIN, fmap, din_target_field=[["item_id", "cate_id"]],
                  din_sequence_field=[["item_history", "cate_history"]])
    assert [len(a.attention_layer.mlp[0].weight[0]) for a in model.attention] == [4 * 2 * 16]
    data = batch(fmap, size=8, lengths=torch.full((8,), 6))
    X = model.get_inputs(data)
    summaries = model.target_attention(X)
    assert set(summaries) == {"item_history", "cate_history"}
    # The summary is a weighted sum of the valid history tokens only.
    zeroed = {k: v.clone() for k, v in X.items()}
    zeroed["item_history"][:, 6:] = 0
    zeroed["cate_history"][:, 6:] = 0
    again = model.target_attention(zeroed)
    assert torch.allclose(again["item_history"], summaries["item_history"])


def test_din_builds_as_fuxictrs_din_batch_norm_in_the_dnn_only_and_xavier_linears():
    # FuxiCTR 2.0.4's DIN gives batch_norm to its DNN, not to DIN_Attention, and re-initialises
    # every Linear (xavier_normal_, zero bias); benchmarks/din_parity.py checks the rest against
    # a FuxiCTR checkout. Tiny embeddings (std 1e-4) then leave the attention near uniform at the
    # start, where a batch norm inside it would rescale them into random scores.
    fmap = feature_map(sequences=(("item_history", "item_id"), ("cate_history", "cate_id")))
    model = build(DIN, fmap, batch_norm=True, attention_hidden_units=[64, 32], dnn_hidden_units=[64, 32])
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for a in model.attention for m in a.attention_layer.mlp)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.dnn.modules()) >= 2
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            assert torch.count_nonzero(m.bias) == 0, name
            if m.weight.numel() >= 1024:  # enough draws for the std to say which init it was
                assert abs(float(m.weight.std()) / (2 / sum(m.weight.shape)) ** 0.5 - 1) < 0.1, name


def test_din_and_transact_reject_misconfigured_fields():
    fmap = feature_map(sequences=(("item_history", "item_id"), ("cate_history", "cate_id")))
    with pytest.raises(ValueError, match="din_target_field.*must pair up"):
        build(DIN, fmap, din_target_field=[["item_id", "cate_id"]], din_sequence_field=[["item_history"]])
    with pytest.raises(ValueError, match="din_sequence_field: 'item_id' is not a sequence"):
        build(DIN, fmap, din_target_field=["item_id"], din_sequence_field=["item_id"])
    with pytest.raises(ValueError, match="transact_target_field: 'price' is not a categorical"):
        build(TransAct, fmap, transact_target_field=["price"])
    with pytest.raises(ValueError, match="num_heads=3 must divide"):
        build(TransAct, fmap, num_heads=3)
    no_shared = feature_map(sequences=(("item_history", None),))
    with pytest.raises(ValueError, match="set din_target_field"):
        build(DIN, no_shared)


def test_transact_fuses_the_target_early_and_reads_the_newest_k_outputs():
    fmap = feature_map(sequences=(("item_history", "item_id"), ("cate_history", "cate_id")), max_len=10)
    model = build(TransAct, fmap, num_recent_tokens=3, num_transformer_layers=1, num_heads=1)
    model.eval()
    assert model.targets == ("item_id", "cate_id") and model.sequences == ("item_history", "cate_history")
    data = batch(fmap, size=4, lengths=torch.tensor([0, 1, 5, 10]))
    X = model.get_inputs(data)
    with torch.no_grad():
        u = model.transact(X)
        w = 4 * 16
        assert u.shape == (4, (3 + 1) * w)
        assert torch.all(u[0] == 0)                      # empty history: zero summary, no NaN
        assert torch.all(u[1, w:3 * w] == 0) and torch.any(u[1, :w] != 0)   # one item: one recent slot
        # Early fusion: the candidate item changes every output of the sequence encoder.
        other = {k: v.clone() for k, v in X.items()}
        other["item_id"] = other["item_id"] % 49 + 1
        assert not torch.allclose(model.transact(other)[2:], u[2:])
