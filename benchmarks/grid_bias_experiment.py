"""Would a fit grid with non-power-of-two sizes make the per-tensor fp8 profiles follow their own composer?

calibration/aic_compose.step_grid samples decode batches and prompt lengths at powers of two; the per-tensor
fp8 GEMM tables jump at m = 2^k + 1, so a profile fitted on that grid sees only the cheap side of each jump
(benchmarks/grid_bias.py). For the per-tensor fp8 Llama-3.1 profiles that have measured serving rows this
script measures:

1. test grid: steps at serving-like sizes (decode batches between the powers of two, also rounded up to
   vLLM's CUDA-graph capture sizes; prefill lengths; a prompt chunk beside a few decodes), each composed by
   the profile's own StepComposer and priced by the shipped profile: error % = (profile - composer) / composer;
2. the same test grid priced by coefficients refitted (calibration.fit.fit_profile, exactly as build_profile
   fits: same split, seed) on the shipped grid PLUS non-power-of-two sizes (3 * 2^k / 2 and 2^k + 1);
3. the serving effect: the measured rows of those setups (calibration.silicon) simulated with the shipped
   profile and with the refitted coefficients, both under the row's engine terms, unchanged.

Diagnostic only: nothing here is shipped; refitted coefficients stay in memory (and --coef-out, if given).

    python benchmarks/grid_bias_experiment.py --out docs/grid_bias.md
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import calibration.aic_compose as aic_compose  # noqa: E402
from benchmarks.grid_bias import composer_of, rebuild  # noqa: E402
from benchmarks.validate_silicon import split_of  # noqa: E402
from calibration.aic_tables import LookupLog  # noqa: E402
from calibration.engine_rows import thin  # noqa: E402
from calibration.plausibility import implied_load  # noqa: E402
from calibration.silicon import engine_version, read_rows, simulate_row  # noqa: E402
from sim.cost_model import ProfileCostModel  # noqa: E402
from sim.engine_terms import engine_terms  # noqa: E402
from sim.profile import load_profile  # noqa: E402
from sim.step_features import step_feature_values  # noqa: E402

PROFILES = tuple(f"{g}_llama-3.1-70b_tp{tp}_fp8" for g, tps in (("h100-sxm", (2, 4, 8)), ("h200-sxm", (1, 2, 4, 8)),
                                                                  ("b200-sxm", (1, 2, 4, 8))) for tp in tps) \
    + tuple(f"h200-sxm_llama-3.1-8b_tp{tp}_fp8" for tp in (1, 2, 4, 8))

# The test grid: serving-like sizes, mostly between the shipped grid's powers of two.
TEST_DECODE_BATCHES = (3, 5, 6, 12, 20, 24, 40, 48, 72, 96, 136, 160, 200, 264, 320)
TEST_DECODE_CONTEXTS = (511, 2047, 8191)
TEST_MIXED_CHUNKS, TEST_MIXED_DECODES, TEST_MIXED_CONTEXTS = (1024, 2048), (5, 20, 48), (511, 2047)
TEST_PREFILL_LENGTHS = (100, 300, 700, 1500, 3000, 6000)


def _richer(values, top: int) -> tuple[int, ...]:
    """`values` (powers of two) with 3 * 2^k / 2 and 2^k + 1 beside each, up to `top`."""
    more = {3 * v // 2 for v in values if v >= 2} | {v + 1 for v in values}
    return tuple(sorted(v for v in set(values) | more if v <= top))


# The richer fit grid: the shipped one plus non-power-of-two batches, lengths and mixed decodes.
RICH_GRID = {"DECODE_BATCHES": _richer(aic_compose.DECODE_BATCHES, aic_compose.MAX_DECODE_BATCH),
             "PREFILL_LENGTHS": _richer(aic_compose.PREFILL_LENGTHS, aic_compose.MAX_STEP_TOKENS),
             "MIXED_DECODES": _richer(aic_compose.MIXED_DECODES, 256),
             "MIXED_CHUNKS": tuple(sorted(set(aic_compose.MIXED_CHUNKS) | {1536}))}


def capture_size(batch: int) -> int:
    """The CUDA-graph size vLLM pads a decode-only batch to (its defaults: 1, 2, 4, multiples of 8 below 256,
    multiples of 16 up to 512; vllm/config/vllm.py)."""
    sizes = [1, 2, 4] + list(range(8, 256, 8)) + list(range(256, 513, 16))
    return next(s for s in sizes if s >= batch)


def test_steps() -> list[tuple[str, list[int], list[int], list[int]]]:
    """(variant, chunk_tokens, context_tokens, samples). Variants: decode (B sequences), decode_pad (B rounded
    up to its capture size), mixed, prefill (one prompt)."""
    steps = []
    for b in TEST_DECODE_BATCHES:
        for c in TEST_DECODE_CONTEXTS:
            steps.append(("decode", [1] * b, [c] * b, [1] * b))
            steps.append(("decode_pad", [1] * capture_size(b), [c] * capture_size(b), [1] * capture_size(b)))
    for chunk in TEST_MIXED_CHUNKS:
        for b in TEST_MIXED_DECODES:
            for c in TEST_MIXED_CONTEXTS:
                steps.append(("mixed", [chunk] + [1] * b, [0] + [c] * b, [1] * (b + 1)))
    steps += [("prefill", [L], [0], [1]) for L in TEST_PREFILL_LENGTHS]
    return steps


def compose_test(composer, kv_capacity_tokens: int) -> list[dict]:
    """The test steps the composer prices from measured table entries and whose KV fits: features and ms."""
    out = []
    for variant, chunk, context, samples in test_steps():
        if sum(c + L for c, L in zip(context, chunk)) > kv_capacity_tokens:
            continue
        log = LookupLog()
        ms = 1e3 * sum(composer.step(chunk, context, samples, log).values())
        if not log.clamped:
            out.append({"variant": variant, "batch": len(chunk) - (variant == "mixed"), "composer_ms": ms,
                        "features": step_feature_values(np.array(chunk), np.array(context), np.array(samples))})
    return out


def errors_pct(steps: list[dict], coefficients: dict) -> dict[str, list[float]]:
    """Variant -> error % of `coefficients` against the composer; decode_unseen: the decode batches in neither
    fit grid; decode_run: the profile at B against the
    composer at B's capture size (what vLLM runs, what the simulator prices)."""
    cost = ProfileCostModel(coefficients)
    out: dict[str, list[float]] = {}
    for s in steps:
        p = 1e3 * cost.step_time_s(*s["features"])
        out.setdefault(s["variant"], []).append(100.0 * (p - s["composer_ms"]) / s["composer_ms"])
        if s["variant"] == "decode" and s["batch"] not in RICH_GRID["DECODE_BATCHES"]:
            out.setdefault("decode_unseen", []).append(out["decode"][-1])
    decode = {(s["batch"], s["features"][3] // s["batch"]): s for s in steps if s["variant"] == "decode"}
    pad = {(s["batch"], s["features"][3] // s["batch"]): s for s in steps if s["variant"] == "decode_pad"}
    for (b, ctx), s in decode.items():
        if (capture_size(b), ctx) in pad:
            p = 1e3 * cost.step_time_s(*s["features"])
            c = pad[(capture_size(b), ctx)]["composer_ms"]
            out.setdefault("decode_run", []).append(100.0 * (p - c) / c)
    return out


def refit(profile) -> tuple[dict, int, int]:
    """Coefficients fitted exactly as build_profile fits them, on the richer grid; the number of composed steps
    and the KV capacity the grid was bounded by."""
    with mock.patch.multiple(aic_compose, **RICH_GRID):
        prof, comp, _ = rebuild(profile)
    return prof.coefficients, len(comp.measurements), comp.kv_capacity_tokens


def _med(values) -> str:
    return f"{np.median(np.abs(values)):.1f} ({np.median(values):+.1f})" if len(values) else "-"


VARIANTS = ("prefill", "decode", "decode_unseen", "decode_pad", "decode_run", "mixed")


def detail_section(name: str, refits: dict, kv_capacity_tokens: int) -> list[str]:
    """Step by step for one profile: decodes and mixed steps at 2047 cached tokens, and prefills."""
    prof = load_profile(name)
    shipped, richer = ProfileCostModel(prof.coefficients), ProfileCostModel(refits[name])
    lines = [f"## Detail: {name} (ms; decodes and mixed decodes at 2047 cached tokens)", "",
             "| step | GEMM m | composer | shipped | richer |", "|---|---:|---:|---:|---:|"]
    seen = set()
    for s in compose_test(composer_of(prof), kv_capacity_tokens):
        f = s["features"]
        ctx = (f[3] - f[0]) // s["batch"] if s["batch"] else 0
        if s["variant"] != "prefill" and ctx != 2047:
            continue
        label = {"decode": f"decode B={s['batch']}", "decode_pad": f"decode B={s['batch']} (capture size)",
                 "mixed": f"chunk {f[0] - s['batch']} + {s['batch']} decodes", "prefill": f"prefill {f[0]}"}
        if label[s["variant"]] in seen or (s["variant"] == "decode_pad" and s["batch"] in TEST_DECODE_BATCHES):
            continue
        seen.add(label[s["variant"]])
        lines.append(f"| {label[s['variant']]} | {f[0]} | {s['composer_ms']:.2f} | "
                     f"{1e3 * shipped.step_time_s(*f):.2f} | {1e3 * richer.step_time_s(*f):.2f} |")
    return lines


def grid_section(profiles, log) -> tuple[list[str], dict[str, dict], dict[str, int]]:
    lines = ["## Test grid: profile vs its composer, median |error| % (median signed error %)", "",
             "decode: B sequences; decode_unseen: the B in neither fit grid; decode_pad: B rounded up to its "
             "CUDA-graph capture size (composed and priced there); decode_run: profile at B vs composer at the capture size (what vLLM runs vs what the "
             "simulator prices).", "",
             "| profile | fit | " + " | ".join(VARIANTS) + " |", "|---|---|" + "---:|" * len(VARIANTS)]
    refits, kv_caps = {}, {}
    for name in profiles:
        prof = load_profile(name)
        coef, n_steps, kv_cap = refit(prof)
        refits[name], kv_caps[name] = coef, kv_cap
        steps = compose_test(composer_of(prof), kv_cap)
        for label, c in (("shipped", prof.coefficients), (f"richer ({n_steps} steps)", coef)):
            err = errors_pct(steps, c)
            lines.append(f"| {name} | {label} | " + " | ".join(_med(err.get(v, [])) for v in VARIANTS) + " |")
        log(f"grid {name}: {len(steps)} test steps, richer fit on {n_steps}")
    return lines, refits, kv_caps


def serving_section(refits: dict, per_setup: int, log) -> list[str]:
    rows = [r for r in read_rows()[0] if r.profile in refits and split_of(r) != "†"]
    implausible = sum(implied_load(r).implausible for r in rows)
    rows = [r for r in rows if not implied_load(r).implausible]  # the validation reports these apart
    rows = thin(rows, per_setup) if per_setup else rows
    recs = []
    for i, row in enumerate(rows):
        terms = engine_terms("vllm", engine_version(row), gpu=row.gpu)
        a = simulate_row(row)
        b = simulate_row(row, cost_model=ProfileCostModel(refits[row.profile], terms.overhead))
        recs.append({"group": f"{row.gpu} {row.model} ({split_of(row)})", "lengths": f"{row.isl}x{row.osl}",
                     **{f"{k}_{m}": 100.0 * (p[f"pred_{m}_ms"] - getattr(row, f"{m}_ms")) / getattr(row, f"{m}_ms")
                        for k, p in (("a", a), ("b", b)) for m in ("tpot", "ttft")}})
        log(f"[{i + 1}/{len(rows)}] {row.id}: TPOT {row.tpot_ms:.2f} vs {a['pred_tpot_ms']:.2f} / "
            f"{b['pred_tpot_ms']:.2f} ms")
    lines = ["## Serving: measured rows simulated with (a) the shipped profile, (b) the richer refit", "",
             "Same engine terms in both (the row's vLLM version and GPU). Median |error| % (median signed %); "
             "error = (predicted - measured) / measured. 'train': llama-3.1-8b is one of the models the engine "
             "terms were fitted on; 'held-out': the others. "
             f"{implausible} physically implausible row(s) left out (calibration.plausibility).", "",
             "| rows | n | TPOT (a) | TPOT (b) | TTFT (a) | TTFT (b) |", "|---|---:|---:|---:|---:|---:|"]
    held = [r for r in recs if "held-out" in r["group"]]
    groups = [(g, [r for r in recs if r["group"] == g]) for g in sorted({r["group"] for r in recs})]
    groups += [(f"held-out, ISLxOSL {k}", [r for r in held if r["lengths"] == k])
               for k in sorted({r["lengths"] for r in held})] + [("all", recs)]
    for g, sel in groups:
        lines.append(f"| {g} | {len(sel)} | " + " | ".join(_med([r[k] for r in sel])
                                                           for k in ("a_tpot", "b_tpot", "a_ttft", "b_ttft")) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="docs/grid_bias.md", help="markdown report path")
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--per-setup", type=int, default=4, help="rows kept per setup (calibration.engine_rows.thin; "
                                                                 "0: all)")
    ap.add_argument("--coef-out", default=None, help="also write the refitted coefficients here (JSON)")
    ap.add_argument("--detail", default="h200-sxm_llama-3.1-70b_tp2_fp8", help="profile shown step by step")
    ap.add_argument("--no-serving", action="store_true", help="the test grid only")
    args = ap.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    lines = ["# Grid bias experiment (diagnostic only, nothing shipped)", "",
             "Richer fit grid: " + "; ".join(f"{k} {list(v)}" for k, v in RICH_GRID.items()), "",
             f"Test grid: decode B {list(TEST_DECODE_BATCHES)} at contexts {list(TEST_DECODE_CONTEXTS)}; mixed chunk "
             f"{list(TEST_MIXED_CHUNKS)} + B {list(TEST_MIXED_DECODES)} decodes at {list(TEST_MIXED_CONTEXTS)}; "
             f"prefill one prompt of {list(TEST_PREFILL_LENGTHS)}. Steps over the KV capacity or outside the "
             "tables are left out.", ""]
    grid_lines, refits, kv_caps = grid_section(args.profiles.split(","), log)
    lines += grid_lines
    if args.detail in refits:
        lines += [""] + detail_section(args.detail, refits, kv_caps[args.detail])
    if args.coef_out:
        Path(args.coef_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.coef_out).write_text(json.dumps(refits, indent=1))
    if not args.no_serving:
        lines += [""] + serving_section(refits, args.per_setup, log)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
