"""``warmup_steps``: a linear learning-rate warm-up over the first optimizer steps (off by default)."""

import pytest
import torch

from interformer_fuxi.models import DIN, InterFormer

from synthetic import MODEL_DEFAULTS, batch, feature_map

FMAP = feature_map(sequences=(("item_history", "item_id"),))
LR = 1e-3


def build(model_class=InterFormer, **kwargs):
    torch.manual_seed(0)
    return model_class(FMAP, **dict(MODEL_DEFAULTS, learning_rate=LR, **kwargs))


def step(model, data):
    """One step as the training loop takes it (the loop counts steps before each one)."""
    model._total_steps += 1
    model.train_step(data)
    return model.optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("model_class", [InterFormer, DIN])
def test_the_rate_climbs_linearly_then_holds(model_class):
    model, data = build(model_class, warmup_steps=4), batch(FMAP, size=32)
    rates = [step(model, data) for _ in range(7)]
    assert rates == pytest.approx([LR / 4, LR / 2, 3 * LR / 4, LR, LR, LR, LR])


def test_the_first_step_moves_the_weights_by_the_warm_rate():
    """Adam's first step moves every weight by about lr: a tenth of it with ten warm-up steps."""
    data = batch(FMAP, size=32)
    moves = {}
    for warmup in (0, 10):
        model = build(warmup_steps=warmup)
        before = [p.detach().clone() for p in model.parameters()]
        step(model, data)
        moves[warmup] = max((p - b).abs().max().item() for p, b in zip(model.parameters(), before))
    assert moves[0] == pytest.approx(LR, rel=0.05)
    assert moves[10] == pytest.approx(LR / 10, rel=0.05)


def test_off_by_default_and_zero_is_the_plain_run():
    data = batch(FMAP, size=32)
    plain, zero = build(), build(warmup_steps=0)
    for _ in range(3):
        assert step(plain, data) == step(zero, data) == LR
    for a, b in zip(plain.parameters(), zero.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [-1, 2.5, True, "100"])
def test_a_bad_value_names_the_key(bad):
    with pytest.raises(ValueError, match="warmup_steps"):
        build(warmup_steps=bad)
