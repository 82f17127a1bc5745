"""The throughput and agreement benchmarks run end to end in a tiny mode and report honestly."""
import os
import re
import sys

import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import agreement  # noqa: E402
import throughput  # noqa: E402


def test_quick_throughput_prints_the_result_line_from_its_measurements(capsys, tmp_path):
    out = tmp_path / "perf.md"
    throughput.main(["--quick", "--T", "8", "--batch", "16", "--steps", "1", "--out", str(out)])
    text = capsys.readouterr().out
    result = re.search(r"^RESULT interformer_train_sps=([\d.]+) din_train_sps=([\d.]+) speedup=([\d.]+) "
                       r"flop_util=([\d.]+) loader_ratio=([\d.]+)$", text, re.M)
    assert result, text[-2000:]
    inter, din, speedup, util, ratio = map(float, result.groups())
    assert inter > 0 and din > 0 and speedup == pytest.approx(inter / din, rel=0.05)  # sps printed to 0.1
    assert 0 < util < 1.5 and ratio > 0
    table = out.read_text()
    assert "| InterFormer | 16 |" in table and "| DIN | 16 |" in table
    # the main measurement on full histories, then the modeled AmazonElectronics_x1 profile
    assert re.search(r"^\| full \(every history holds T items\) \| 8\.0 \| ", table, re.M), table
    assert re.search(r"^\| amazon \(.*\) \| [\d.]+ \| [\d,]+ \| [\d,]+ \| [\d.]+ \|$", table, re.M), table


def test_quick_throughput_on_short_histories_compares_with_full_ones(capsys, tmp_path):
    out = tmp_path / "perf.md"
    throughput.main(["--quick", "--lengths", "amazon", "--T", "8", "--batch", "16", "--steps", "1",
                     "--out", str(out)])
    assert re.search(r"^RESULT interformer_train_sps=", capsys.readouterr().out, re.M)
    table = out.read_text()
    assert "histories amazon;" in table
    rows = re.findall(r"^\| (amazon|full) \(", table, re.M)
    assert rows == ["amazon", "full"], table  # the main measurement first, then the other profile


def test_history_length_profiles():
    import torch
    full = throughput.history_lengths("full", 1000, 100, 0)
    assert torch.equal(full, torch.full((1000,), 100))
    uniform = throughput.history_lengths("uniform", 20000, 100, 0)
    assert uniform.min() == 0 and uniform.max() == 100 and abs(uniform.float().mean() - 50) < 1
    amazon = throughput.history_lengths("amazon", 20000, 100, 0)
    assert amazon.min() == 1 and amazon.max() <= 100
    # 1, 2 and 3 items equally often (every user gives them), then a geometric tail; mean 5.2
    share = torch.bincount(amazon, minlength=5)[1:5].float() / len(amazon)
    assert torch.allclose(share[:3], torch.full((3,), 1 / 6.78), atol=0.01)
    assert share[3] == pytest.approx(0.79 / 6.78, abs=0.01)
    assert amazon.float().mean() == pytest.approx(5.22, abs=0.15)
    assert torch.equal(throughput.history_lengths("amazon", 50, 8, 3), throughput.history_lengths("amazon", 50, 8, 3))
    assert throughput.history_lengths("amazon", 5000, 8, 0).max() == 8  # longer ones cut to T


def test_flop_count_includes_attention():
    import torch
    fmap = throughput.amazon_feature_map(16)
    model = throughput.build("InterFormer", fmap, "cpu")
    data = throughput.make_batches(fmap, 4, 1, "cpu")[0]
    train, forward = throughput.flops_per_sample(model, data)
    with torch.no_grad():
        model.eval()
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as plain:
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                torch.randn(1, 4, 20, 16), torch.randn(1, 4, 20, 16), torch.randn(1, 4, 20, 16))
    assert plain.get_total_flops() == 2 * 2 * 4 * 20 * 20 * 16  # QK^T and AV, per head
    assert train > 2 * forward > 0


@pytest.mark.parametrize("switch", ["fold_rope", "fused_cpu_attention", "fused_cpu_pffn", "fused_cpu_pool"])
def test_flop_count_is_the_same_whichever_path_computes_the_attention(switch):
    import switch_ab
    fmap = throughput.amazon_feature_map(16)
    model = throughput.build("InterFormer", fmap, "cpu")
    data = throughput.make_batches(fmap, 4, 1, "cpu")[0]  # full histories: RoPE folded into weights
    turn = switch_ab.switch_setter(model, switch)  # fold_rope: at any batch size
    counts = {}
    for on in (True, False):
        turn(on)
        counts[on] = throughput.flops_per_sample(model, data)
    assert counts[True] == counts[False]
    assert counts[True][0] > 0


def test_agreement_passes_on_cpu():
    assert agreement.main(["--models", "DIN", "TransAct", "--batch", "16", "--T", "8"]) == 0


def test_profile_step_prints_the_ops_of_a_training_step(capsys):
    import profile_step
    profile_step.main(["--batch", "8", "--T", "8", "--warmup", "1", "--steps", "1", "--rows", "5"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.match(r"InterFormer, batch 8, T=8, cpu: [\d.]+ ms of op time per step, [\d,]+ ops dispatched per step$",
                    lines[0])
    # the profiler's events: aten ops, and ranges such as Optimizer.step#Adam.step where they rank
    rows = [re.match(r"\s*([\d.]+)%\s+([\d.]+) ms/step\s+x\d+\s+\S.*$", line) for line in lines[1:]]
    assert len(rows) == 5 and all(rows), lines
    shares = [float(r.group(1)) for r in rows]
    assert shares == sorted(shares, reverse=True) and sum(shares) <= 100.5


def test_attention_backends_time_every_backend_and_head_count(capsys):
    import attention_backends
    attention_backends.main(["--batch", "4", "--N", "10", "--d", "16", "--heads", "4", "1", "--reps", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    # our kernel where its head widths (8, 16) allow: not at dh = 4
    for line, heads, ours in zip(lines[1:], (4, 1), ("", r", ours \(C\+\+\) \d+ ms")):
        assert re.match(rf"  {heads} heads \(dh={16 // heads}\): fused \d+ ms, math \d+ ms, bmm-softmax-bmm \d+ ms{ours}$",
                        line)


def test_attention_backends_agree():
    import torch
    import attention_backends as ab
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 7, 8) for _ in range(3))
    mask = torch.rand(3, 1, 1, 7) > 0.3
    mask[..., 0] = True
    out = ab.fused(q, k, v, mask)
    assert torch.allclose(ab.math_backend(q, k, v, mask), out, atol=1e-5)
    assert torch.allclose(ab.plain(q, k, v, mask), out, atol=1e-5)
    assert torch.allclose(ab.ours(q, k, v, mask), out, atol=1e-5)


def test_compile_agreement_says_it_needs_cuda(monkeypatch):
    import torch
    import compile_agreement
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        compile_agreement.main()


@pytest.mark.parametrize("switch", ["fold_rope", "fused_cpu_attention", "pool_backward_by_hand", "low_rank_product",
                                    "skip_padding", "dedup_sequence_tokens"])
def test_switch_ab_turns_the_fast_path_on_and_off_in_turns(switch, capsys, monkeypatch):
    import switch_ab
    seen = []
    real = switch_ab.switch_setter

    def recording_setter(model, name):
        turn = real(model, name)

        def record(on):
            turn(on)
            if name == "fold_rope":
                seen.append({m.fold_rope for m in model.modules() if hasattr(m, "fold_rope")})
            elif name in ("fused_cpu_attention", "pool_backward_by_hand", "low_rank_product"):
                seen.append({getattr(m, name) for m in model.modules() if hasattr(m, name)})
            elif name == "skip_padding":
                seen.append({model.skip_padding})
            else:
                seen.append({model.feature_arch.dedup_radix is not None})
        return record
    monkeypatch.setattr(switch_ab, "switch_setter", recording_setter)
    switch_ab.main(["--switch", switch, "--rounds", "2", "--warmup", "1", "--batch", "8", "--T", "8"])
    timed = seen[2:-1]  # after the warm-up pair, before the final reset
    assert timed == [{True}, {False}, {False}, {True}]  # the order alternates between rounds
    assert seen[-1] == {True}
    out = capsys.readouterr().out
    assert re.search(rf"^RESULT switch={switch} on_ms=[\d.]+ off_ms=[\d.]+ paired_diff_ms=-?[\d.]+$", out, re.M)


def test_synthetic_categories_follow_the_items_as_in_the_dataset():
    import torch
    fmap = throughput.amazon_feature_map(12)
    cols = {f: fmap.get_column_index(f) for f in ("item_id", "cate_id", "item_history", "cate_history")}

    def pairs(data):  # (item, category) at every target and history slot
        items = torch.cat([data[:, cols["item_id"]].reshape(-1), data[:, cols["item_history"]].reshape(-1)])
        cates = torch.cat([data[:, cols["cate_id"]].reshape(-1), data[:, cols["cate_history"]].reshape(-1)])
        return items.long(), cates.long()

    items, cates = pairs(torch.cat(throughput.make_batches(fmap, 256, 2, "cpu", "uniform")))
    table = throughput.item_categories(fmap)
    assert torch.equal(cates, table[items])  # one category per item, across rows, batches and slots
    assert torch.equal(cates == 0, items == 0) and cates.max() < fmap.features["cate_id"]["vocab_size"]
    items, cates = pairs(throughput.make_batches(fmap, 256, 1, "cpu", categories="independent")[0])
    assert not torch.equal(cates, table[items])
    with pytest.raises(ValueError, match="categories must be one of"):
        throughput.make_batches(fmap, 4, 1, "cpu", categories="random")
