#!/usr/bin/env bash
# All GPU checks in one go (under 5 minutes on one H100), from the repository root:
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. predictions on CUDA (fp32, bf16 autocast) against the CPU, same weights;
# 2. InterFormer and DIN training throughput on CUDA in fp32 and in bf16, with the fraction of
#    the GPU's measured fp32 / bf16 matmul peak;
# 3. one end-to-end run of the runner on CUDA (InterFormer_tiny --gpu 0).
# Logs go to OUT_DIR (default: gpu_check_out/); the RESULT lines are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(), torch.__version__)" | tee "$OUT/device.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$OUT/device.txt" 2>/dev/null || true

echo "== 1. CPU/GPU agreement"
timeout 120 "$PY" benchmarks/agreement.py --device cuda --models InterFormer DIN TransAct 2>&1 | tee "$OUT/agreement.txt"

echo "== 2. throughput, fp32 and bf16"
timeout 120 "$PY" benchmarks/throughput.py --quick --device cuda --batch 2048 --steps 20 --out "$OUT/throughput_fp32.md" 2>&1 | tee "$OUT/throughput_fp32.txt"
timeout 120 "$PY" benchmarks/throughput.py --quick --device cuda --bf16 --batch 2048 --steps 20 --out "$OUT/throughput_bf16.md" 2>&1 | tee "$OUT/throughput_bf16.txt"

echo "== 3. runner end to end on CUDA"
timeout 120 "$PY" run_expid.py --expid InterFormer_tiny --gpu 0 > "$OUT/run_expid.txt" 2>&1
grep -a "Test evaluation" -A3 "$OUT/run_expid.txt" | grep -a Metrics | tee -a "$OUT/run_expid_metrics.txt"

echo "== summary"
grep -h "agreement:" "$OUT/agreement.txt"
echo "fp32: $(grep -h '^RESULT' "$OUT/throughput_fp32.txt")"
echo "bf16: $(grep -h '^RESULT' "$OUT/throughput_bf16.txt")"
