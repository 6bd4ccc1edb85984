"""Running vLLM here: the environment of its process (offline, caches under ./.cache), the CPU
binding vLLM gives a served model worker, the sampling every measurement uses, and a child process
under a timeout whose failure is one `EngineError` carrying the tail of its log.

Used by the calibration sweep (calibration/vllm_harness.py), the served-engine checks
(calibration/vllm_server.py) and the parity runs (calibration/parity/). Never imports vllm or torch
at import time.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


class EngineError(RuntimeError):
    """The measured engine failed to start, crashed, or ran past its time limit."""


# Random sampling (not greedy): its per-sequence cost is part of every profile; what the server is sent
# when the profile is checked against it (calibration/vllm_server.py) must match.
SAMPLING_TEMPERATURE = 1.0


def cache_env(root: Path | None = None) -> dict[str, str]:
    """Environment for a vLLM process: no network, loopback only, caches and temp files under
    `root` (default ./.cache), values already set by the caller kept."""
    root = Path(root or os.environ.get("SERVESIM_CACHE_DIR", ".cache")).resolve()
    env = dict(os.environ)
    defaults = {"VLLM_CACHE_ROOT": root / "vllm", "TORCHINDUCTOR_CACHE_DIR": root / "inductor",
                "TMPDIR": root / "tmp", "VLLM_RPC_BASE_PATH": root / "rpc"}
    for key, path in defaults.items():
        if key not in env:
            path.mkdir(parents=True, exist_ok=True)
            env[key] = str(path)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_HOST_IP="127.0.0.1", VLLM_NO_USAGE_STATS="1",
               DO_NOT_TRACK="1", VLLM_ENABLE_V1_MULTIPROCESSING="0", PYTHONUNBUFFERED="1")
    return env


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def run_worker(cmd: list[str], log_path: Path, timeout_s: float, env: dict[str, str] | None = None) -> None:
    """Run `cmd` with stdout+stderr to `log_path`; EngineError on a non-zero exit or after
    `timeout_s` (its whole process group is terminated, then killed)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            raise EngineError(f"engine did not finish within {timeout_s:.0f} s and was stopped "
                              f"(log: {log_path}); last lines:\n{log_tail(log_path)}") from None
        except BaseException:  # Ctrl-C: take the engine down with us
            _stop_group(proc)
            raise
    if rc != 0:
        raise EngineError(f"engine exited with status {rc} (log: {log_path}); last lines:\n{log_tail(log_path)}")


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def serving_worker_cores(allowed: set[int] | None = None) -> list[int]:
    """The cores vLLM's CPU build gives a served single-rank model worker: its automatic binding
    (VLLM_CPU_OMP_THREADS_BIND=auto) keeps one core for the engine-core process, the highest, and
    binds the worker's OMP threads to the rest (on 2 cores: worker on core 0, engine core on core 1;
    see the server log's "OpenMP thread binding info"). SMT siblings are not told apart here."""
    cores = sorted(allowed if allowed is not None else os.sched_getaffinity(0))
    return cores[:-1] if len(cores) > 1 else cores


def cpu_worker_env(cores: list[int]) -> dict[str, str]:
    """The OpenMP settings vLLM's CPU build gives a served model worker on `cores` (its
    OMPProcessManager with GNU OpenMP): one thread per core, bound. The in-process sweep runs under
    them so that it times the engine as served, not a faster one with every core to itself."""
    ids = ",".join(str(c) for c in cores)
    return {"OMP_NUM_THREADS": str(len(cores)), "OMP_PLACES": "{" + ids + "}", "OMP_PROC_BIND": "true",
            "SERVESIM_CPU_WORKER_CORES": ids}


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
