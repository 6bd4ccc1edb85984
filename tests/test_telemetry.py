"""GPU telemetry sampler: a fake pynvml module, and the paths without pynvml or without a driver."""
from __future__ import annotations

import sys
import time
import types

import pandas as pd
import pytest

from calibration.telemetry import COLUMNS, TELEMETRY_FILE, TelemetrySampler


class NVMLError(Exception):
    pass


def fake_pynvml(*, init_error: Exception | None = None, power_supported: bool = True) -> types.ModuleType:
    """The subset of pynvml the sampler calls, with fixed readings."""
    m = types.ModuleType("pynvml")
    m.NVML_CLOCK_SM = 1
    m.calls = []

    def init():
        m.calls.append("init")
        if init_error is not None:
            raise init_error

    def power(handle):
        if not power_supported:
            raise NVMLError("Not Supported")
        return 312_500  # mW

    m.nvmlInit = init
    m.nvmlShutdown = lambda: m.calls.append("shutdown")
    m.nvmlDeviceGetHandleByIndex = lambda i: ("gpu", i)
    m.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=42 * 2**30, total=80 * 2**30)
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=97, memory=55)
    m.nvmlDeviceGetClockInfo = lambda h, kind: 1980 if kind == m.NVML_CLOCK_SM else 0
    m.nvmlDeviceGetPowerUsage = power
    return m


def test_samples_a_gpu_and_writes_telemetry_csv(monkeypatch, tmp_path):
    nvml = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    messages = []
    with TelemetrySampler(interval_s=0.01, log=messages.append) as sampler:
        time.sleep(0.08)
    assert messages == []
    assert sampler.device == "NVIDIA H100 80GB HBM3"
    assert len(sampler.samples) >= 2
    path = sampler.write(tmp_path)
    assert path == tmp_path / TELEMETRY_FILE
    df = pd.read_csv(path)
    assert list(df.columns) == list(COLUMNS)
    row = df.iloc[0]
    assert row.memory_used_bytes == 42 * 2**30
    assert (row.gpu_util_pct, row.memory_util_pct, row.sm_clock_mhz, row.power_w) == (97, 55, 1980, 312.5)
    assert df.t_unix.is_monotonic_increasing
    assert nvml.calls == ["init", "shutdown"]


def test_a_field_the_gpu_does_not_report_is_empty(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(power_supported=False))
    sampler = TelemetrySampler(interval_s=0.01, log=lambda m: None)
    assert sampler.start()
    frame = sampler.stop()
    assert frame.power_w.isna().all() and (frame.sm_clock_mhz == 1980).all()
    assert sampler.stop().equals(frame)  # stopping twice is harmless


def test_without_pynvml_it_says_so_once_and_records_nothing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    messages = []
    sampler = TelemetrySampler(interval_s=0.01, log=messages.append)
    assert sampler.start() is False
    time.sleep(0.03)
    assert sampler.stop().empty
    assert sampler.write(tmp_path) is None and not (tmp_path / TELEMETRY_FILE).exists()
    assert len(messages) == 1 and "nvidia-ml-py" in messages[0] and "goes on" in messages[0]
    assert "not installed" in sampler.off_reason


def test_without_a_driver_it_says_so_once(monkeypatch):
    nvml = fake_pynvml(init_error=NVMLError("NVML Shared Library Not Found"))
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    messages = []
    with TelemetrySampler(interval_s=0.01, log=messages.append) as sampler:
        pass
    assert sampler.samples == []
    assert len(messages) == 1 and "no NVIDIA driver" in messages[0] and "Shared Library" in messages[0]


def test_interval_must_be_positive():
    with pytest.raises(ValueError, match="interval_s"):
        TelemetrySampler(interval_s=0)
