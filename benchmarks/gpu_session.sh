#!/usr/bin/env bash
# One lease on a GPU machine (the `device` tool): what it measures, each step time-boxed, results in $OUT.
#   1. the machine: nvidia-smi, torch, whether vLLM is importable;
#   2. the memory figures behind the KV capacity (gpu_memory_probe.py);
#   3. the dense GEMMs of Llama-3.1-8B (TP1) and Llama-3.1-70B (TP1, 2, 4, 8), bf16 and fp8, beside
#      aiconfigurator's tables (gpu_gemm_check.py); the 70B TP2 run adds m = 2^k + 1 (the fp8 tables' jumps);
#   4. one layer's attention of Llama-3.1-8B (gpu_attention_check.py);
#   5. a decode step eager vs graph-replayed (gpu_decode_graph.py);
#   6. `servesim calibrate run --engine torch` (the full grid took 224 s on the H100: 63 points x 10 passes + a warm-up) on Llama-3.1-8B (random weights, full grid), with pynvml
#      telemetry: a measured profile to set beside the composed ${GPU}_llama-3.1-8b_tp1_bf16.
# Python packages the machine lacks (simpy) travel as wheels in .whl (see the device README).
#   GPU=h100-sxm bash benchmarks/gpu_session.sh      (OUT= the folder for the results)
set -u
OUT=${OUT:-/tmp/gpu_out}
RES=$OUT/run  # everything goes here, then into one archive (the device tool brings back 8 files at most)
mkdir -p "$RES"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
GPU=${GPU:-h100-sxm}
step() {  # step NAME SECONDS COMMAND...: run with a time box, log to $RES/NAME.log, say how it ended
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$RES/$name.log" 2>&1
  echo "$name rc $? in $(( $(date +%s) - t0 )) s"
}
{ date -u; nvidia-smi; nvidia-smi -q -d CLOCK,POWER | head -60
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  python3 -c "import vllm; print('vllm', vllm.__version__)" 2>&1 | tail -1
  python3 -c "import pynvml; print('pynvml ok')" 2>&1 | tail -1; } > "$RES/machine.txt" 2>&1
step memory 60 python3 benchmarks/gpu_memory_probe.py measure --out "$RES/memory_llama-3.1-8b.csv"
step gemm_8b 45 python3 benchmarks/gpu_gemm_check.py measure --model llama-3.1-8b --out "$RES/gemm_llama-3.1-8b_tp1.csv"
for tp in 1 2 4 8; do
  extra=(); [ "$tp" = 2 ] && extra=(--tokens 1,4,16,64,128,129,256,257,512,513,1024,2048,4096,8192)
  step "gemm_70b_tp$tp" 45 python3 benchmarks/gpu_gemm_check.py measure --model llama-3.1-70b --tp "$tp" "${extra[@]}" \
    --out "$RES/gemm_llama-3.1-70b_tp$tp.csv"
done
step attention 45 python3 benchmarks/gpu_attention_check.py measure --out "$RES/attention_llama-3.1-8b.csv"
step decode 60 python3 benchmarks/gpu_decode_graph.py measure --out "$RES/decode_llama-3.1-8b.csv"
step calibrate 300 python3 -m sim.cli calibrate run --engine torch --model llama-3.1-8b --dummy-weights --gpu "$GPU" \
  --grid full --out "$RES/prof"
tail -25 "$RES/calibrate.log"
tar czf "$OUT/run.tgz" -C "$RES" . && rm -rf "$RES"
ls -la "$OUT"
