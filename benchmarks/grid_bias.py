"""Does a composed profile price the step sizes serving produces, or only the ones its grid sampled?

calibration/aic_compose.step_grid composes decode batches and prompt lengths at powers of two (1, 2, 4, ...,
512 sequences; 16 ... 8192 tokens). Some of aiconfigurator-core's GEMM tables are not smooth in m: the
per-tensor fp8 tables (vLLM's CUTLASS path on Hopper) are measured at m = 2^k and 2^k + 1, and the second is
up to ~2x the first (a kernel configuration per m bucket). A fit on power-of-two steps sees only the cheap
side of each jump. This prints, per profile, the composer's decode step (kernels, no engine terms) and the
profile's at batch sizes on both sides of the jumps, and the ratio profile / composer (< 1: the profile is
faster than the tables it was fitted on).

    python benchmarks/grid_bias.py
    python benchmarks/grid_bias.py --profiles h200-sxm_llama-3.1-70b_tp2_fp8 --context 1500

Diagnostic only: nothing here is fitted or shipped.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_decode_graph import decode_step_ms  # noqa: E402
from calibration.aic_step import StepComposer  # noqa: E402
from calibration.aic_tables import LookupLog, load_tables  # noqa: E402
from sim.catalog import resolve_model  # noqa: E402
from sim.profile import load_profile  # noqa: E402

PROFILES = ("h200-sxm_llama-3.1-70b_tp2_fp8", "h100-sxm_llama-3.1-70b_tp2_fp8", "b200-sxm_llama-3.1-70b_tp2_fp8",
            "h100-sxm_qwen3-32b_tp2_bf16", "h200-sxm_minimax-m2.5_tp4_fp8_kvbf16", "h200-sxm_gpt-oss-120b_tp2_mxfp4")
BATCHES = (16, 17, 32, 33, 64, 65, 128, 129, 256, 257)


def import_args(profile) -> dict[str, str]:
    """The options a shipped composed profile was imported with ({'--model': ..., '--system': ...}), read back from
    its provenance's command line (calibration/aiconfigurator_import.py writes it)."""
    cmd = shlex.split(profile.provenance["command"])
    return dict(zip(cmd[3::2], cmd[4::2]))


@lru_cache(maxsize=16)
def tables_of(system: str, framework: str, version: str):
    """aiconfigurator-core's op tables, read once per (system, framework, version) in a process."""
    return load_tables(system, framework, version)


def composer_of(profile, cls: type[StepComposer] = StepComposer) -> StepComposer:
    """The composer a shipped composed profile was built with (or a subclass of it, `cls`, on the same options)."""
    a = import_args(profile)
    return cls(tables_of(a["--system"], a["--framework"], a["--version"]), resolve_model(a["--model"], "model"),
               tp=int(a["--tp"]), dtype=a["--dtype"], kv_dtype=a.get("--kv-dtype", profile.kv_dtype),
               moe_parallel=a.get("--moe-parallel", "tp"))


def rebuild(profile):
    """build_profile run with the options a shipped composed profile was imported with: (profile, composition,
    fit result). Under a patch of calibration.aic_compose (its grid, its StepComposer) this refits the profile
    as the patch says; unpatched it gives the shipped coefficients back."""
    from calibration.aiconfigurator_import import build_profile

    a = import_args(profile)
    return build_profile(a["--model"], a["--system"], int(a["--tp"]), a["--dtype"],
                         kv_dtype=a.get("--kv-dtype", profile.kv_dtype), framework=a["--framework"],
                         version=a["--version"], moe_parallel=a.get("--moe-parallel", "tp"),
                         out=str(Path("tmp_profiles") / profile.name))


def decode_ms(profile, composer: StepComposer, batch: int, context: int) -> tuple[float, float]:
    """(composer, profile) decode step of `batch` sequences at `context` cached tokens each, ms."""
    comp = sum(composer.step([1] * batch, [context] * batch, [1] * batch, LookupLog()).values()) * 1e3
    return comp, decode_step_ms(profile.name, batch, context)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--context", type=int, default=1500, help="cached tokens per sequence")
    args = ap.parse_args(argv)
    print(f"decode step, {args.context} cached tokens per sequence: composer ms / profile ms (profile / composer)\n")
    print("| profile | " + " | ".join(f"B={b}" for b in BATCHES) + " |")
    print("|---|" + "---:|" * len(BATCHES))
    for name in args.profiles.split(","):
        prof = load_profile(name)
        comp = composer_of(prof)
        cells = []
        for b in BATCHES:
            c, p = decode_ms(prof, comp, b, args.context)
            cells.append(f"{c:.1f} / {p:.1f} ({p / c:.2f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
