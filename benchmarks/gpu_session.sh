#!/usr/bin/env bash
# One lease on a GPU machine (the `device` tool): what it measures, each step time-boxed, results in $OUT.
#   1. the machine: nvidia-smi, torch, whether vLLM is importable;
#   2. the dense GEMMs of Llama-3.1-8B, bf16 and fp8, beside aiconfigurator's tables (gpu_gemm_check.py);
#   3. `servesim calibrate run --engine torch` on Llama-3.1-8B (random weights, quick grid), with pynvml
#      telemetry: a measured profile to set beside the composed h200-sxm_llama-3.1-8b_tp1_bf16.
# Python packages the machine lacks (simpy) travel as wheels in .whl (see the device README).
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
GPU=${GPU:-h200-sxm}
{ date -u; nvidia-smi; nvidia-smi -q -d CLOCK,POWER | head -60
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  python3 -c "import vllm; print('vllm', vllm.__version__)" 2>&1 | tail -1
  python3 -c "import pynvml; print('pynvml ok')" 2>&1 | tail -1; } > "$OUT/machine.txt" 2>&1
echo "gemm start $(date -u +%T)"
timeout 90 python3 benchmarks/gpu_gemm_check.py measure --model llama-3.1-8b --out "$OUT/gemm.csv" > "$OUT/gemm.log" 2>&1
echo "gemm rc $? $(date -u +%T)"
timeout 200 python3 -m sim.cli calibrate run --engine torch --model llama-3.1-8b --dummy-weights --gpu "$GPU" \
  --grid quick --out "$OUT/prof" > "$OUT/calibrate.log" 2>&1
echo "calibrate rc $? $(date -u +%T)"
tail -25 "$OUT/calibrate.log"
