"""GPU telemetry beside the step timings: a pynvml sampler thread.

Every `interval_s` it records the device's memory in use, GPU and memory-controller
utilisation, SM clock and power draw (telemetry.csv, one row per sample, wall-clock
`t_unix` to line up with measurements.csv's `t_start_unix`). Without nvidia-ml-py or an
NVIDIA driver it says so once and records nothing: a sweep never fails for want of telemetry.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

TELEMETRY_FILE = "telemetry.csv"
COLUMNS = ("t_unix", "memory_used_bytes", "gpu_util_pct", "memory_util_pct", "sm_clock_mhz", "power_w")


def load_nvml() -> tuple[Any, str | None]:
    """(initialised pynvml module, None), or (None, why telemetry is off)."""
    try:
        import pynvml
    except ImportError:
        return None, "pynvml is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded / ...: no usable driver
        return None, f"no NVIDIA driver ({type(exc).__name__}: {exc})"
    return pynvml, None


class TelemetrySampler:
    """Samples one NVIDIA GPU on a daemon thread between `start()` and `stop()` (or as a context manager)."""

    def __init__(self, interval_s: float = 0.5, device_index: int = 0, log: Callable[[str], None] = print):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.interval_s, self.device_index, self._log = interval_s, device_index, log
        self.samples: list[dict[str, float | None]] = []
        self.device: str | None = None
        self.off_reason: str | None = None
        self._nvml = self._handle = self._thread = None
        self._stop = threading.Event()

    def start(self) -> bool:
        """Begin sampling; False (with one message) when there is nothing to sample."""
        nvml, why = load_nvml()
        if nvml is not None:
            try:
                self._handle = nvml.nvmlDeviceGetHandleByIndex(self.device_index)
                name = nvml.nvmlDeviceGetName(self._handle)
                self.device = name.decode() if isinstance(name, bytes) else str(name)
            except Exception as exc:
                why = f"GPU {self.device_index} not readable ({type(exc).__name__}: {exc})"
                _shutdown(nvml)
                nvml = None
        if nvml is None:
            self.off_reason = why
            self._log(f"telemetry: off, {why}; the sweep goes on without it")
            return False
        self._nvml = nvml
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="servesim-telemetry", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        while True:
            self.samples.append(self.sample())
            if self._stop.wait(self.interval_s):
                return

    def sample(self) -> dict[str, float | None]:
        """One reading; a field the GPU does not report (e.g. power on some boards) is None."""
        nvml, h = self._nvml, self._handle

        def read(fn):
            try:
                return fn()
            except Exception:
                return None

        util = read(lambda: nvml.nvmlDeviceGetUtilizationRates(h))
        power_mw = read(lambda: nvml.nvmlDeviceGetPowerUsage(h))
        return {"t_unix": time.time(),
                "memory_used_bytes": read(lambda: int(nvml.nvmlDeviceGetMemoryInfo(h).used)),
                "gpu_util_pct": None if util is None else float(util.gpu),
                "memory_util_pct": None if util is None else float(util.memory),
                "sm_clock_mhz": read(lambda: float(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM))),
                "power_w": None if power_mw is None else power_mw / 1000.0}

    def stop(self) -> pd.DataFrame:
        """Stop sampling (idempotent); the samples so far."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10 * self.interval_s + 5)
            self._thread = None
        if self._nvml is not None:
            _shutdown(self._nvml)
            self._nvml = None
        return self.frame()

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.samples, columns=list(COLUMNS))

    def write(self, folder: str | Path) -> Path | None:
        """telemetry.csv in `folder` if anything was sampled, else None."""
        if not self.samples:
            return None
        out = Path(folder) / TELEMETRY_FILE
        self.frame().to_csv(out, index=False)
        return out

    def __enter__(self) -> "TelemetrySampler":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _shutdown(nvml) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:
        pass
