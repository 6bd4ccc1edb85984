"""The capacity planner (`servesim plan`): which GPUs, how many replicas by hour, at what cost.

    config.py     the planning file's `plan:` section (PlanConfig, candidates) -> candidate scenarios
    estimate.py   the analytic bracket: a replica's throughput from the cost model, no simulation
    search.py     simulated points: is a replica count good enough at a rate (Task -> Sample -> Verdict)
    apart.py      each candidate's search in its own rounds, all sharing the workers
    backend.py    where the simulations run: local processes or Ray
    cache.py      simulated points kept on disk, keyed by what their numbers depend on
    fleet.py      replicas per candidate: the peak-hour fleet, the autoscaled hours, the zero-load floor
    guided.py     the autoscaled hours' search, guided by the margins already measured
    result.py     the answer as flat records: CandidatePlan per candidate, the ranked Plan
    planner.py    plan(): inputs, the searches on a backend (and the cache), costs, ranking, the Pareto front
    cli.py        `servesim plan` and the text rendering of a Plan (imports planner; never the reverse)

Nothing is imported here: `sim.windows` uses the backends without loading the planner.
"""
