"""The capacity planner (`servesim plan`): which GPUs, how many replicas by hour, at what cost.

    config.py     the planning file's `plan:` section (PlanConfig, candidates) -> candidate scenarios
    estimate.py   the analytic bracket: a replica's throughput from the cost model, no simulation
    search.py     simulated points: is a replica count good enough at a rate (Task -> Sample -> Verdict)
    backend.py    where the simulations run: local processes or Ray
    cache.py      simulated points kept on disk, keyed by what their numbers depend on
    planner.py    plan(): the search per candidate and hour, costs, ranking, the Pareto front
    cli.py        `servesim plan` and the text rendering of a Plan (imports planner; never the reverse)

Nothing is imported here: `sim.windows` uses the backends without loading the planner.
"""
