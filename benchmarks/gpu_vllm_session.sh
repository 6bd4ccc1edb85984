#!/usr/bin/env bash
# The vLLM run on a GPU lease (issue 10: "measure one real profile and serving sweep on it with vLLM"), for
# a machine whose image has no vLLM. Prepared here by benchmarks/gpu_vllm_pack.py, which cuts vLLM 0.26.0
# (the newest release pinning the image's torch 2.11.0) and the packages the image lacks into parts of
# .vllm_carry/pK, one part per `device` call (a call carries at most 64 MiB).
#
# The calls, back to back on one warm machine (it goes back 30 s after a call: prepare them all first):
#   run(command="ls .vllm_carry",                          carry=[".vllm_carry/p1"])   # starts the machine
#   run(command="ls .vllm_carry",                          carry=[".vllm_carry/p2"])   # ... one per part
#   run(command="bash benchmarks/gpu_vllm_session.sh", carry=[".vllm_carry/pN", ".whl"], timeout_s=585)
# (2026-11-27, H200: start ~30 s, each part call ~5 s, the session 397 s; `pip download` of the .whl below and
# `python benchmarks/gpu_vllm_pack.py` first, here: the parts are ignored files, a new checkout has none.)
# Parts carried by earlier calls stay on the warm machine (ignored paths are kept between calls); .whl holds
# servesim's own missing wheel (simpy: see benchmarks/gpu_session.sh). Results come back as one archive.
#
# Steps, each time-boxed inside one deadline (BUDGET_S, default 540 s from the start: the archive is always
# written before the call's limit), most informative first:
#   1. reassemble the parts (checked against the manifest's sha256), install to /tmp/site without deps;
#   2. `import vllm` and the machine's facts;
#   3. `servesim calibrate serve --engine-defaults --no-fit` with the composed ${GPU}_llama-3.1-8b_tp1_bf16:
#      the closed-loop sweep on vLLM's OpenAI server as deployed (compiled, CUDA graphs, KV pool sized by
#      vLLM's memory profiling at gpu_memory_utilization 0.9): what a composed profile is meant to predict,
#      and the engine's own KV block count for this GPU (server log); the full and the held-out sweep on one
#      server start (DEFAULTS_SWEEP=full+heldout: ~45 s of requests after ~140 s of start-up on an H200);
#   4. `servesim calibrate run --engine vllm --cuda-graphs` on Llama-3.1-8B with dummy weights (grid quick):
#      a step profile of the engine as served (compiled, CUDA graphs), to set beside the composed one step by
#      step (the 2026-11-27 lease measured it eager: launch-bound, 3.8x the served TPOT);
#   5. EAGER_SERVE=1 only: `servesim calibrate serve --no-fit` (full sweep, eager, a fixed 1 GiB pool) on that
#      profile, as the 2026-11-27 lease did;
#   6. the engine logs' memory lines (CUDA-graph capture size, KV blocks).
#   INSTALL_ONLY=1 stops after step 1 (how tests/test_gpu_vllm_pack.py checks the reassembly on a CPU).
set -u
OUT=${OUT:-/tmp/gpu_out}
RES=$OUT/run
SITE=${SITE:-/tmp/site}
mkdir -p "$RES"
# The catalog's name for the GPU (GPU= to set it): read from nvidia-smi where it names an H100 or H200.
detect_gpu() {
  case "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)" in
    *H200*) echo h200-sxm ;; *H100*) echo h100-sxm ;; *) echo h100-sxm ;;
  esac
}
GPU=${GPU:-$(detect_gpu)}
DEADLINE=$(( $(date +%s) + ${BUDGET_S:-540} ))
step() {  # step NAME SECONDS COMMAND...: run with a time box (cut to the deadline), log to $RES/NAME.log
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  local left=$(( DEADLINE - t0 - 15 ))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 45 ]; then echo "$name skipped: ${left} s left" | tee -a "$RES/steps.txt"; return 124; fi
  timeout "$limit" "$@" > "$RES/$name.log" 2>&1
  local rc=$?
  echo "$name rc $rc in $(( $(date +%s) - t0 )) s" | tee -a "$RES/steps.txt"
  return $rc
}

reassemble() {  # .vllm_carry/p1..pN -> $SITE
  local manifest=.vllm_carry/p1/manifest.json n
  [ -f "$manifest" ] || { echo "no $manifest: carry .vllm_carry/p1 first"; return 1; }
  n=$(python3 -c "import json; print(len(json.load(open('$manifest'))['parts']))")
  for k in $(seq 1 "$n"); do
    [ -f ".vllm_carry/p$k/part" ] || { echo "part p$k missing (carried parts: $(ls .vllm_carry | tr '\n' ' '))"; return 1; }
  done
  local tmp=${TMPDIR:-/tmp}/vllm_carry.$$
  mkdir -p "$tmp"
  for k in $(seq 1 "$n"); do cat ".vllm_carry/p$k/part"; done > "$tmp/wheels.tar"
  python3 - "$manifest" "$tmp/wheels.tar" <<'EOF' || return 1
import hashlib, json, sys
want = json.load(open(sys.argv[1]))["tar_sha256"]
h = hashlib.sha256()
with open(sys.argv[2], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
if h.hexdigest() != want:
    sys.exit(f"reassembled parts do not match the manifest (sha256 {h.hexdigest()} != {want})")
print("parts reassembled, sha256 ok")
EOF
  tar xf "$tmp/wheels.tar" -C "$tmp" && rm -f "$tmp/wheels.tar"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir ${PIP_EXTRA:-} --target "$SITE" "$tmp"/wheels/*.whl \
    || return 1
  rm -rf "$tmp"
  echo "installed $(ls "$SITE" | grep -c dist-info) distributions into $SITE"
}

t0=$(date +%s)
reassemble > "$RES/install.log" 2>&1
rc=$?
echo "install rc $rc in $(( $(date +%s) - t0 )) s" | tee -a "$RES/steps.txt"
cat "$RES/install.log"
if [ "${INSTALL_ONLY:-0}" = 1 ]; then exit $rc; fi
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl
fi
# FlashInfer's sampler would JIT-compile its kernels on first use (minutes of nvcc): PyTorch's sampler instead.
export PYTHONUNBUFFERED=1 PYTHONPATH=$SITE:$PWD HF_HUB_OFFLINE=1 VLLM_USE_FLASHINFER_SAMPLER=0
{ date -u; nvidia-smi
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())
import vllm; print('vllm', vllm.__version__)
from vllm.vllm_flash_attn import flash_attn_interface as i; print('FA3', i.FA3_AVAILABLE, 'FA2', i.FA2_AVAILABLE)" 2>&1 | tail -4
} > "$RES/machine.txt" 2>&1
cat "$RES/machine.txt"
# 3. The deployment's settings, the composed profile: measurements only (the fit runs off the lease).
serve_scenario() {  # serve_scenario NAME PROFILE: the sweep's scenario (its serving limits are the server's)
  cat <<EOF
name: $1
seed: 1
workload:
  arrival: {kind: poisson, rate_per_s: 1}
  num_requests: 10
  prompt_tokens: {kind: constant, value: 256}
  output_tokens: {kind: constant, value: 64}
model: llama-3.1-8b
hardware: {gpu: $GPU}
serving: {replicas: 1, tensor_parallel: 1, max_model_len: 4096}
cost_model: {profile: $2}
EOF
}
serve_scenario gpu-vllm-serve-engine-defaults "${GPU}_llama-3.1-8b_tp1_bf16" > "$RES/serve_defaults.yaml"
step serve_defaults 240 python3 -m sim.cli calibrate serve "$RES/serve_defaults.yaml" --engine-defaults --no-fit --log-steps \
  --sweep "${DEFAULTS_SWEEP:-full+heldout}" --out "$RES/serve_defaults"
tail -15 "$RES/serve_defaults.log"
cp .cache/serving/serve_defaults/server.log "$RES/serve_defaults/server.log" 2>/dev/null
# 4. The step sweep as served (DEFAULTS_ONLY=1: stop after step 3, e.g. for a second sweep of other shapes).
[ "${DEFAULTS_ONLY:-0}" = 1 ] || step calibrate 200 python3 -m sim.cli calibrate run --engine vllm --model llama-3.1-8b --dummy-weights --gpu "$GPU" \
  --grid quick --cuda-graphs --keep-log --timeout-s 190 --stat median --out "$RES/prof_vllm"
tail -20 "$RES/calibrate.log"
# 5. The served engine on that profile, eager with its fixed pool, as calibrate serve runs by default (opt-in).
if [ "${EAGER_SERVE:-0}" = 1 ] && [ -f "$RES/prof_vllm/profile.json" ]; then
  serve_scenario gpu-vllm-serve "$RES/prof_vllm" > "$RES/serve.yaml"
  step serve 150 python3 -m sim.cli calibrate serve "$RES/serve.yaml" --no-fit --out "$RES/serve_eager"
  tail -15 "$RES/serve.log"
  cp .cache/serving/serve_eager/server.log "$RES/serve_eager/server.log" 2>/dev/null
fi
# What vLLM said about memory (CUDA graphs, KV blocks, the profiler's figures), from every log kept.
grep -H -i -E "cuda ?graph|kv cache|blocks|memory profiling|non.torch|peak|maximum concurrency|compil" "$RES"/*.log \
  "$RES"/*/*.log 2>/dev/null | grep -v "Iteration(" | head -150 > "$RES/memory_lines.txt"
tar czf "$OUT/run.tgz" -C "$RES" . && rm -rf "$RES"
ls -la "$OUT"
