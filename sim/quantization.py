"""Number formats for weights and KV cache: bytes per value and which tensor-core rate they run at."""
from __future__ import annotations

from typing import Literal

from .catalog import GpuSpec
from .configio import ConfigError

WeightDtype = Literal["bf16", "fp16", "fp8", "int8", "int4", "fp4", "mxfp4"]
KvDtype = Literal["bf16", "fp16", "fp8", "int8"]

# int4 weight-only formats (AWQ/GPTQ) keep one fp16 scale per group of 128 weights:
# 0.5 byte per weight + 2 bytes / 128 weights.
INT4_GROUP_SIZE = 128
INT4_BYTES_PER_WEIGHT = 0.5 + 2.0 / INT4_GROUP_SIZE

# 4-bit floating point with block scales: NVFP4 (one fp8 scale per 16 values, "fp4") and OCP MXFP4
# (one e8m0 scale per 32 values, gpt-oss's native format).
FP4_BYTES_PER_WEIGHT = 0.5 + 1.0 / 16
MXFP4_BYTES_PER_WEIGHT = 0.5 + 1.0 / 32

_WEIGHT_BYTES: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": INT4_BYTES_PER_WEIGHT,
                                   "fp4": FP4_BYTES_PER_WEIGHT, "mxfp4": MXFP4_BYTES_PER_WEIGHT}
_KV_BYTES: dict[str, int] = {"bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}


def weight_bytes_per_param(dtype: str) -> float:
    return _WEIGHT_BYTES[dtype]


def kv_bytes_per_value(dtype: str) -> int:
    return _KV_BYTES[dtype]


def matmul_tflops(gpu: GpuSpec, weight_dtype: str, path: str) -> float:
    """Dense tensor-core rate the linear layers run at for this weight format on this GPU.

    fp8 (W8A8) needs fp8 tensor cores; int8 (W8A8) needs int8 tensor cores. int4 is
    weight-only (W4A16): weights are dequantised and the matmul runs at the bf16 rate. fp4 / mxfp4
    run on fp4 tensor cores where the GPU has them (Blackwell), weight-only at the bf16 rate elsewhere
    (vLLM's Marlin / Triton fp4 kernels on Hopper and Ampere).
    """
    if weight_dtype in ("fp4", "mxfp4"):
        return gpu.fp4_tflops if gpu.fp4_tflops is not None else gpu.bf16_tflops
    if weight_dtype == "fp8":
        if gpu.fp8_tflops is None:
            raise ConfigError(f"{path}: got 'fp8'; {gpu.name} has no fp8 tensor cores "
                              "(fp8 needs Ada/Hopper or newer); allowed here: bf16, fp16, int8, int4")
        return gpu.fp8_tflops
    if weight_dtype == "int8":
        if gpu.int8_tops is None:
            raise ConfigError(f"{path}: got 'int8'; {gpu.name} has no int8 tensor cores; allowed: bf16, fp16, int4")
        return gpu.int8_tops
    return gpu.bf16_tflops
