import math

import numpy as np
import pytest
from fuxictr.metrics import evaluate_metrics as fuxictr_metrics

from interformer_fuxi.errors import UserError
from interformer_fuxi.metrics import evaluate_metrics, group_auc


def test_ne_matches_hand_computed_value():
    y = np.array([1, 0, 0, 1], dtype=float)
    p = np.array([0.8, 0.3, 0.1, 0.6])
    logloss = -(math.log(0.8) + math.log(0.7) + math.log(0.9) + math.log(0.6)) / 4
    train_ctr = 0.25
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    out = evaluate_metrics(y, p, ["logloss", "NE"], train_ctr=train_ctr)
    assert out["logloss"] == pytest.approx(logloss, rel=1e-12)
    assert out["NE"] == pytest.approx(logloss / entropy, rel=1e-12)


def test_ne_of_predicting_the_training_ctr_is_one():
    y = np.array([1] * 30 + [0] * 70, dtype=float)
    out = evaluate_metrics(y, np.full(100, 0.3), ["NE"], train_ctr=0.3)
    assert out["NE"] == pytest.approx(1.0, abs=1e-9)


def test_ne_needs_the_training_ctr():
    with pytest.raises(UserError, match="training set's mean CTR"):
        evaluate_metrics(np.array([0.0, 1.0]), np.array([0.2, 0.7]), ["NE"])


def test_metrics_equal_fuxictr_on_ties_and_one_class_groups():
    rng = np.random.default_rng(0)
    n = 3000
    group = rng.integers(0, 200, n)
    y = (rng.random(n) < 0.3).astype(float)
    y[group == 7] = 1.0  # a one-class group must be skipped
    p = np.round(rng.random(n), 2)  # many ties
    ours = evaluate_metrics(y, p, ["gAUC", "AUC", "logloss"], group)
    ref = fuxictr_metrics(y, p, ["gAUC", "AUC", "logloss"], group)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=1e-12)


def test_gauc_weights_groups_by_size():
    # group a: AUC 1 with 4 rows; group b: AUC 0 with 2 rows -> (4*1 + 2*0) / 6
    y = np.array([0, 0, 1, 1, 0, 1], dtype=float)
    p = np.array([0.1, 0.2, 0.8, 0.9, 0.9, 0.1])
    g = np.array(["a", "a", "a", "a", "b", "b"])
    assert group_auc(y, p, g) == pytest.approx(4 / 6)


def test_unknown_metric_is_a_user_error():
    with pytest.raises(UserError, match="unknown metric 'AUCC'"):
        evaluate_metrics(np.array([0.0, 1.0]), np.array([0.2, 0.7]), ["AUCC"])
