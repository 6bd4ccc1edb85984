"""Cross-validation of H2 (docs/fp8_fixed_cost.md): the composer's separate per-tensor fp8 activation
quantisation dropped, as if aiconfigurator's fp8 GEMM tables already included it.

The rule, written before the run (2026-11-26 17:02 UTC):
    H2: the composer's separate per-tensor fp8 activation quantisation (scale_matrix) is dropped, as if the
    fp8 GEMM tables already included it (benchmarks/fp8_fixed_cost_experiment.py's patched composer, drop_quant
    only, no Δ). Test: calibration.engine_cv unchanged (same rows, thinning, folds, structures), its basis
    re-simulated with every per-tensor fp8 profile that a training row uses refitted under H2 (in memory).
    Adopt H2 iff the structure engine_cv chooses scores CV TPOT median |err| at least 1.0 point lower than
    today's chosen structure on today's basis (o2: TPOT 6.4 %), and CV TTFT not more than 1.0 point higher.
    Otherwise keep today's profiles and record the CV result. H1 (the lease's per-call Δ) is not tested:
    Δ was measured on H100 and H200 only and the training rows include B200 and B300.

How: calibration.engine_cv's main, unchanged, with every per-tensor fp8 profile a training row uses
refitted in memory under H2 (benchmarks/fp8_fixed_cost_experiment.patched_composer(0, drop_quant=True),
built by benchmarks/grid_bias.rebuild with the options each was imported with;
load_profile patched where the basis reads it). 13 profiles changed (MiniMax-M2.5 fp8 on H100, H200,
B200, B300; Llama-3.1-8B fp8 on H200); fp4 and bf16 profiles came back the same.

Result (2026-11-26, 252 training rows): the chosen structure is o2 both ways; CV TPOT 6.4 % today vs
6.0 % under H2, CV TTFT 19.0 % vs 18.2 %: TPOT better by 0.4 point, under the rule's 1.0, so H2 is NOT
adopted: nothing shipped changed. (A first run read 7.2 % / 17.1 %: its refits ignored the profiles'
--moe-parallel, so the expert-parallel MiniMax profiles were refitted with tensor-parallel experts - more
than H2. The refits now go through benchmarks/grid_bias.rebuild, and a control refit without the patch
must give each profile's shipped coefficients back before H2 is applied.)

    python benchmarks/fp8_h2_cv.py today   # engine_cv on today's profiles (basis cache: /tmp/fp8_h2_today.npz)
    python benchmarks/fp8_h2_cv.py h2      # the same under H2 (/tmp/fp8_h2.npz)
"""
import dataclasses
import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import calibration.engine_cv as cv  # noqa: E402
import calibration.engine_overlap as eo  # noqa: E402
import calibration.engine_rows as er  # noqa: E402
import calibration.silicon as si  # noqa: E402
import fp8_fixed_cost_experiment as fx  # noqa: E402
from calibration.aic_step import StepComposer  # noqa: E402
from calibration.profile import load_profile as orig  # noqa: E402

H2 = fx.patched_composer(0.0, True)
cache, changed = {}, []


def h2_load(name, *a, **k):
    p = orig(name, *a, **k)
    if not isinstance(name, str) or "fp8" not in name or k or a:
        return p
    if name not in cache:
        if fx.refit(p, StepComposer) != p.coefficients:  # control: the same refit unpatched is the shipped profile
            sys.exit(f"{name}: refitting it unpatched does not give its shipped coefficients; the H2 refit would "
                     "differ from it by more than H2")
        coef = fx.refit(p, H2)
        cache[name] = dataclasses.replace(p, coefficients=coef)
        if coef != p.coefficients:
            changed.append(name)
        print(f"H2 refit {name}: {'changed' if coef != p.coefficients else 'same'}", flush=True)
    return cache[name]


mode = sys.argv[1] if len(sys.argv) > 1 else ""
if mode not in ("today", "h2"):
    sys.exit("usage: python benchmarks/fp8_h2_cv.py today|h2")
if mode == "h2":
    with mock.patch.object(er, "load_profile", h2_load), mock.patch.object(si, "load_profile", h2_load), \
            mock.patch.object(eo, "load_profile", h2_load):
        cv.main(["--basis", "/tmp/fp8_h2.npz", "--out", ""])
    print("changed profiles:", changed)
else:
    cv.main(["--basis", "/tmp/fp8_h2_today.npz", "--out", ""])
