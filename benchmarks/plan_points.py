"""Every simulation a plan runs, in order: candidate, replicas, rate, requests, seed, CPU s, verdict.

    python benchmarks/plan_points.py [scenario] [--set PATH=VALUE ...] [--out points.md]

Runs the plan inline (one worker, no cache) and prints one row per simulation, then the totals per
candidate and the plan's printout. The verdict column is the point's verdict after that simulation
was added: `in`/`out` when it became final (with the binding ratio), `screen ~r` or `close r` when the
point needed more.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.plan import backend as backend_mod  # noqa: E402
from sim.plan import search  # noqa: E402
from sim.plan.cli import format_plan  # noqa: E402
from sim.plan.config import read_plan  # noqa: E402
from sim.plan.planner import plan  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default="scenarios/customer_support_1m_per_day.yaml")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", help="also write the table (markdown) here")
    args = ap.parse_args()

    rows: list[dict] = []
    real_simulate = search.simulate

    def timed(task):
        c0 = time.process_time()
        s = real_simulate(task)
        rows.append({"cpu_s": time.process_time() - c0, "task": task})
        return s
    real_submit = backend_mod.LocalBackend.submit
    backend_mod.LocalBackend.submit = lambda self, task, fn=None: real_submit(self, task, timed)
    real_add, real_settle = search.Points.add, search.Points.settle
    unsettled: dict = {}  # point -> its rows added since its last settle

    def add(self, key, task, sample):
        row = next(r for r in rows if r["task"] is task)
        row["key"] = key
        unsettled.setdefault(key, []).append(row)
        return real_add(self, key, task, sample)

    def settle(self, key):
        real_settle(self, key)
        v = self.verdicts.get(key)
        if v is None:
            samples = self.samples.get(key)
            v = search.judge(samples, self.slo) if samples else search.judge([self.screened[key]], self.slo)
            text = f"{'close' if samples else 'screen'} {v.binding} {v.ratio:.3f}"
        else:
            text = f"{'in' if v.meets else 'out'} {v.binding} {v.ratio:.3f}" + ("" if v.stable else " unstable")
        for r in unsettled.pop(key, []):
            r["verdict"] = text
    search.Points.add, search.Points.settle = add, settle

    c0 = time.process_time()
    p = plan(args.scenario, args.set, workers=1, cache=False)
    cpu = time.process_time() - c0
    lines = ["| # | candidate | replicas | rate req/s | requests | seed | kind | CPU s | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    per = defaultdict(lambda: [0, 0.0])
    _, cfg, _ = read_plan(args.scenario, args.set)  # candidate names in the file's order (a key's index)
    cnames = [c.name or f"candidate-{i + 1}" for i, c in enumerate(cfg.candidates)] or [p.scenario]
    for i, r in enumerate(rows, 1):
        k, t = r["key"], r["task"]
        name = cnames[k.candidate]
        per[name][0] += 1
        per[name][1] += r["cpu_s"]
        lines.append(f"| {i} | {name} | {k.replicas} | {k.rate_per_s:.3f} | {t.scenario.workload.num_requests} | "
                     f"{t.seed} | {'screen' if t.screening else 'full'} | {r['cpu_s']:.2f} | {r.get('verdict', '')} |")
    lines += ["", "| candidate | simulations | CPU s |", "| --- | --- | --- |"]
    lines += [f"| {n} | {c} | {s:.1f} |" for n, (c, s) in per.items()]
    lines += ["", f"total: {len(rows)} simulations, {sum(r['cpu_s'] for r in rows):.1f} CPU s in simulations, "
                  f"{cpu:.1f} CPU s for the plan"]
    table = "\n".join(lines)
    print(table)
    print()
    print(format_plan(p))
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
