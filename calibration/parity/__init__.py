"""Step-for-step parity between servesim's scheduler and vLLM v1's real `Scheduler`.

`trace` holds the case and the per-step records both sides produce and compares them;
`vllm_driver` drives vLLM's scheduler and KV manager with synthetic model outputs (no model,
no forward pass); `sim_driver` runs servesim's engine on the same requests arriving at the
same steps; `cases` generates randomized cases. `timed_engine` runs vLLM's real in-process engine
on wall-clock arrivals and records each step's decisions and time; `timing` rebuilds latencies
on that schedule from other step times (benchmarks/timing_vllm.py).
"""
