"""The real engine's steps beside the simulation's, sweep point by sweep point (issue 10, item 5: how the
real scheduler takes a closed loop's waves, not only what TTFT comes out).

`servesim calibrate serve ... --log-steps` has vLLM log every engine step's batch in its server log
(`Iteration(N): C context requests, T context tokens, G generation requests, U generation tokens, iteration
elapsed time: E ms`; a context request is one whose prompt is still being computed, chunk continuations
included). This reads those lines, cuts them into the warm-up and the sweep points by their token totals
(each point is a closed loop that ends before the next starts, with no prefix caching: a point computes
exactly requests x prompt context tokens and requests x (output - 1) generation tokens; decode-only steps
past those totals stay with the point they follow), simulates each point as the serving fit does
(calibration.serving.point_workload: its clients all start at once; the scenario's own cost model, steps
recorded), and prints per point the steps, the prefill steps and how many prompts each took (the waves),
the mean decode batch, and the first steps side by side; with --api-server-ms, also simulated with the API
server's time per request (engine.api_server_per_request_s), which splits each burst as the real server does.

    python benchmarks/step_sequence.py SERVER_LOG SERVING_RUN_JSON SCENARIO [--first 8] [--points c32,c96]
        [--api-server-ms 0.25] [--out doc.md]

SERVER_LOG: the run's server.log (`calibrate serve` keeps it in .cache/serving/<out folder>/; the GPU lease
script copies it into the run folder). SERVING_RUN_JSON: the run's serving_run.json (its points, in order).
SCENARIO: the scenario the run served (its profile, limits and engine), e.g. the lease's serve_defaults.yaml.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ITERATION = re.compile(r"Iteration\((\d+)\): (\d+) context requests, (\d+) context tokens, (\d+) generation requests, "
                       r"(\d+) generation tokens, iteration elapsed time: ([0-9.]+) ms( \(dummy\))?")
WARM_UP_MAX_TOKENS = 16  # calibration.vllm_server.warm_up's default, as measure_sweep calls it


@dataclass(frozen=True)
class Step:
    """One engine step: prompts being computed (requests, tokens) and decoding requests (and their tokens);
    `ms`: the step's time as the engine logged it (None for a simulated step's log-less form)."""
    ctx_reqs: int
    ctx_tokens: int
    gen_reqs: int
    gen_tokens: int
    ms: float


@dataclass(frozen=True)
class Segment:
    """A stretch of the log that belongs to one workload: its name and the tokens it computes."""
    name: str
    ctx_tokens: int
    gen_tokens: int


def parse_steps(text: str) -> list[Step]:
    """The engine's steps in log order (dummy steps of idle data-parallel ranks left out)."""
    out = []
    for m in ITERATION.finditer(text):
        if m.group(7):
            continue
        out.append(Step(int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)), float(m.group(6))))
    return out


def segments_of(points: list[dict], warm_up_max_tokens: int = WARM_UP_MAX_TOKENS) -> list[Segment]:
    """The warm-up (two prompts of each point's length, `warm_up_max_tokens` out) and then each point."""
    warm = Segment("warm-up", 2 * sum(p["prompt_tokens"] for p in points), 2 * len(points) * (warm_up_max_tokens - 1))
    return [warm] + [Segment(label(p), p["num_requests"] * p["prompt_tokens"],
                             p["num_requests"] * (p["output_tokens"] - 1)) for p in points]


def label(p: dict) -> str:
    """A point of serving_run.json (SweepPoint's fields) by its SweepPoint label, e.g. "c32 p256 o64"."""
    from calibration.serving import SweepPoint

    return SweepPoint(**p).label


def split_steps(steps: list[Step], segments: list[Segment]) -> dict[str, list[Step]]:
    """The steps of each segment, in order: a segment ends once its context and generation tokens are all
    computed, and decode-only steps after that stay with it (an engine may run a step past a request's last
    token). Raises ValueError where the log does not add up (another workload in between, prefix caching,
    a log cut short)."""
    out: dict[str, list[Step]] = {}
    i = 0
    for k, seg in enumerate(segments):
        ctx = gen = 0
        mine: list[Step] = []
        while i < len(steps) and (ctx < seg.ctx_tokens or gen < seg.gen_tokens):
            s = steps[i]
            ctx += s.ctx_tokens
            gen += s.gen_tokens
            mine.append(s)
            i += 1
        if ctx != seg.ctx_tokens or gen < seg.gen_tokens:
            raise ValueError(f"{seg.name}: the log's steps give {ctx} context / {gen} generation tokens where the "
                             f"workload computes {seg.ctx_tokens} / {seg.gen_tokens} (prefix caching on, another "
                             "workload in between, or the log cut short?)")
        while i < len(steps) and steps[i].ctx_tokens == 0 and k + 1 < len(segments):
            mine.append(steps[i])  # a trailing decode-only step of this point, before the next point's prompts
            i += 1
        out[seg.name] = mine
    return out


def simulated_steps(scenario, point: dict) -> list[Step]:
    """The point simulated as the serving fit does (all clients start at once), its steps as Steps."""
    from calibration.serving import SweepPoint, point_workload
    from sim.simulation import run

    res = run(scenario, workload=point_workload(SweepPoint(**point)), record_steps=True)
    st = res.steps.sort_values("start_s", kind="stable")
    out = []
    for n, pre, dec, dur in zip(st["num_seqs"], st["prefill_tokens"], st["decode_tokens"], st["duration_s"]):
        out.append(Step(int(n) - int(dec), int(pre), int(dec), int(dec), 1e3 * float(dur)))
    return out


def summary(steps: list[Step]) -> dict:
    prefill = [s for s in steps if s.ctx_reqs]
    decode_batches = [s.gen_reqs for s in steps if s.gen_reqs]
    return {"steps": len(steps), "prefill_steps": len(prefill),
            "prompts_per_prefill_step": [s.ctx_reqs for s in prefill],
            "mean_decode_batch": sum(decode_batches) / len(decode_batches) if decode_batches else 0.0,
            "engine_s": sum(s.ms for s in steps) / 1e3}


def waves(steps: list[Step]) -> str:
    """The prompts each prefill step took, in order, with the decode-only steps between two prefill steps
    as (k): "1 (4) 8 9 9" is one prompt alone, four steps that only decode, then steps of 8, 9 and 9."""
    out, gap = [], 0
    for s in steps:
        if s.ctx_reqs:
            if gap and out:
                out.append(f"({gap})")
            out.append(str(s.ctx_reqs))
            gap = 0
        else:
            gap += 1
    return " ".join(out)


def report(real: dict[str, list[Step]], sims: dict[str, dict[str, list[Step]]], first: int) -> str:
    """`sims`: per simulated variant (its name), the steps of each point simulated."""
    names = list(next(iter(sims.values())))
    lines = ["| point | | steps | prefill steps | prompts per prefill step, in order ((k): k decode-only steps "
             "between) | mean decode batch | engine s |",
             "|---|---|---:|---:|---|---:|---:|"]
    for name in names:
        for k, (who, steps) in enumerate([("real", real[name])] + [(v, sim[name]) for v, sim in sims.items()]):
            s = summary(steps)
            lines.append(f"| {name if k == 0 else ''} | {who} | {s['steps']} | {s['prefill_steps']} | "
                         f"{waves(steps)} | {s['mean_decode_batch']:.1f} | "
                         f"{s['engine_s']:.2f} |")
    lines += ["", f"The first {first} steps of each point (prompts computed / their tokens + decoding requests; ms):", ""]
    for name in names:
        lines.append(f"- {name}: real " + "; ".join(f"{s.ctx_reqs}/{s.ctx_tokens}+{s.gen_reqs} ({s.ms:.0f})"
                                                   for s in real[name][:first]))
        for v, sim in sims.items():
            lines.append(f"  {v} " + "; ".join(f"{s.ctx_reqs}/{s.ctx_tokens}+{s.gen_reqs} ({s.ms:.0f})"
                                               for s in sim[name][:first]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from sim.scenario import load_scenario

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("server_log")
    ap.add_argument("serving_run", help="the run's serving_run.json")
    ap.add_argument("scenario", help="the scenario the run served")
    ap.add_argument("--first", type=int, default=8, help="steps shown side by side per point (default 8)")
    ap.add_argument("--points", default="", help="comma-separated label prefixes (e.g. c32,c96): only these points")
    ap.add_argument("--out", default="", help="also write the table to this markdown file, with the command")
    ap.add_argument("--api-server-ms", type=float, default=None,
                    help="also simulate with engine.api_server_per_request_s at this many ms (the API server's "
                         "time per request: a burst's first request reaches the engine alone, the rest together)")
    args = ap.parse_args(argv)
    points = json.loads(Path(args.serving_run).read_text())["points"]
    real = split_steps(parse_steps(Path(args.server_log).read_text(errors="replace")), segments_of(points))
    scenario = load_scenario(args.scenario)
    wanted = [w for w in args.points.split(",") if w]
    chosen = [p for p in points if not wanted or any(label(p).startswith(w + " ") or label(p) == w for w in wanted)]
    sims = {"simulated": {label(p): simulated_steps(scenario, p) for p in chosen}}
    if args.api_server_ms is not None:
        with_server = load_scenario(args.scenario, [f"engine.api_server_per_request_s={args.api_server_ms / 1e3!r}"])
        sims[f"simulated, API server {args.api_server_ms:g} ms a request"] = {
            label(p): simulated_steps(with_server, p) for p in chosen}
    text = report(real, sims, args.first)
    print(text)
    if args.out:
        import shlex

        command = shlex.join(["python", "benchmarks/step_sequence.py", *(argv if argv is not None else sys.argv[1:])])
        Path(args.out).write_text(f"Written by `{command}` (do not edit by hand).\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
