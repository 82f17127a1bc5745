"""Scoring over length buckets: every row once, each batch cut to a window that holds its rows'
items, the same scores as full windows for every model here, and full windows for a model
that reads positions."""
import pytest
import torch

from interformer_fuxi.export import example_inputs
from interformer_fuxi.length_buckets import bucketed_batches, probe_inputs, score_bucketed, windows_agree
from interformer_fuxi.serving import ServingModel, batch_inputs

from synthetic import batch
from test_export import CASES, build, fmap


def test_every_row_once_in_length_order_and_every_item_inside_its_window():
    torch.manual_seed(0)
    T, B = 20, 37
    lengths = torch.randint(0, T + 1, (B,))
    pos = torch.arange(T)
    pre = torch.arange(B) % 2 == 0  # pre- and post-padded rows mixed
    valid = torch.where(pre[:, None], pos >= T - lengths[:, None], pos < lengths[:, None])
    items = torch.randint(1, 50, (B, T)).masked_fill(~valid, 0)
    other = items.clone()  # a second field of the same length shares the window
    dense = torch.randn(B)
    seen = []
    for rows, (a, b, d) in bucketed_batches((items, other, dense), batch_size=8):
        assert len(rows) <= 8 and a.shape == b.shape and 2 <= a.shape[1] <= T
        assert torch.equal(d, dense[rows])
        # every valid item of every row is inside the window
        assert torch.equal((a != 0).sum(1), lengths[rows])
        seen += rows.tolist()
    assert sorted(seen) == list(range(B))
    spans = lengths[torch.tensor(seen)]
    assert torch.equal(spans, spans.sort().values)  # rows in order of length


def test_short_histories_cost_short_windows():
    ids = torch.zeros(6, 100, dtype=torch.long)
    ids[:4, -3:] = 7  # four rows of 3 items, pre-padded
    ids[4:, :] = 9  # two full rows
    widths = [b[0].shape[1] for _, b in bucketed_batches((ids,), batch_size=4)]
    assert widths == [3, 100]
    empty = torch.zeros(3, 100, dtype=torch.long)
    assert [b[0].shape[1] for _, b in bucketed_batches((empty,), batch_size=4)] == [2]


@pytest.mark.parametrize("model_class,kwargs", CASES,
                         ids=[f"{c.__name__}-{k.get('interleave_mode', '')}".strip("-") for c, k in CASES])
def test_every_model_scores_the_same_over_cut_windows(model_class, kwargs):
    serving = ServingModel(build(model_class, **kwargs))
    model = serving.model

    def score(inputs):
        return serving(*inputs)
    assert windows_agree(score, example_inputs(serving, batch_size=16), model_class.__name__)
    inputs = batch_inputs(model, batch(fmap(), size=40, seed=5))
    with torch.no_grad():
        assert torch.allclose(score_bucketed(score, inputs, 8), score(inputs), atol=1e-5, rtol=0)


def test_a_model_that_reads_positions_keeps_full_windows(caplog):
    """A scorer whose result depends on where a history sits is detected and not bucketed."""
    serving = ServingModel(build(CASES[-1][0]))
    example = example_inputs(serving, batch_size=16)

    def positional(inputs):  # the mean position of the valid items: shifts when the window moves
        seq = next(x for x in inputs if x.dim() == 2)
        pos = torch.arange(seq.shape[1], dtype=torch.float32)
        return ((seq != 0) * pos).sum(1) / (seq != 0).sum(1).clamp(min=1)
    with caplog.at_level("INFO"):
        assert not windows_agree(positional, example, "Positional")
    assert "Positional: scores every padded position" in caplog.text
    probe = probe_inputs(example)
    seq = next(x for x in probe if x.dim() == 2)
    lengths = (seq != 0).sum(1)
    assert lengths[0] == 0 and lengths[1] == seq.shape[1] and len(set(lengths.tolist())) > 5
