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


def test_agreement_passes_on_cpu():
    assert agreement.main(["--models", "DIN", "TransAct", "--batch", "16", "--T", "8"]) == 0
