#!/usr/bin/env bash
# All GPU checks in one go (about 5 minutes on one H100 or H200), from the repository root:
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. predictions on CUDA (fp32, bf16 autocast) against the CPU, same weights;
# 2. every model's training / evaluation throughput on CUDA in fp32 (the full tables: batch 1024
#    and 2048, latency, cost against T and rows), and InterFormer and DIN in bf16, each with the
#    fraction of the GPU's fp32 / bf16 matmul peak measured in the same process;
# 3. one end-to-end run of the runner on CUDA (InterFormer_tiny --gpu 0);
# 4. the same run data-parallel under torchrun with NCCL, one process per visible GPU (a world
#    of one on a one-GPU machine: the DDP wrapper, NCCL reductions, gathered metrics).
# Each step runs even when an earlier one fails; the script exits non-zero if any failed.
# Logs go to OUT_DIR (default: gpu_check_out/); the RESULT lines are printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
export PYTHONUNBUFFERED=1
failed=()
step() {  # step NAME TIMEOUT_S COMMAND...: run, log to OUT/NAME.txt, remember failures
    local name=$1 limit=$2
    shift 2
    echo "== $name"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt" || failed+=("$name")
}

"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(), torch.__version__)" | tee "$OUT/device.txt" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$OUT/device.txt" 2>/dev/null || true

step agreement 120 "$PY" benchmarks/agreement.py --device cuda
step throughput_fp32 240 "$PY" benchmarks/throughput.py --device cuda --steps 20 --latency_reps 100 --out "$OUT/throughput_fp32.md"
step throughput_bf16 120 "$PY" benchmarks/throughput.py --quick --device cuda --bf16 --batch 1024 2048 --steps 20 --out "$OUT/throughput_bf16.md"
step run_expid 120 "$PY" run_expid.py --expid InterFormer_tiny --gpu 0
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l); NGPU=$(( NGPU > 0 ? NGPU : 1 ))
step ddp_nccl 180 "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NGPU" run_expid.py \
    --expid InterFormer_tiny --fresh --gpu $(seq -s " " 0 $(( NGPU - 1 )))

echo "== summary"
grep -h "agreement:" "$OUT/agreement.txt"
grep -ah "\[Metrics\]" "$OUT/run_expid.txt" | tail -1
echo "ddp ($NGPU GPU(s), NCCL): $(grep -ah "\[Metrics\]" "$OUT/ddp_nccl.txt" | tail -1)"
grep -ah "samples/s" "$OUT/ddp_nccl.txt" | tail -1
echo "fp32: $(grep -h '^RESULT' "$OUT/throughput_fp32.txt")"
echo "bf16: $(grep -h '^RESULT' "$OUT/throughput_bf16.txt")"
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
