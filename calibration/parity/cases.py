"""Randomized parity cases: bursts and gaps of arrivals, short and long prompts (some beyond
the step's token budget), a KV pool from barely one max-length sequence (preemption) to
roomy, chunked prefill on and off, FCFS and priority with levels.

Every case is valid for both simulators: prompt + output <= max_model_len, the pool holds one
max-length sequence, max_num_batched_tokens >= max_num_seqs, and without chunked prefill the
budget holds a max-length prompt (vLLM's and servesim's own rules).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from sim.conversation import ConversationConfig
from sim.workload import ArrivalConfig, LengthDist, PriorityClass, WorkloadConfig, generate_workload

from .trace import ParityCase, Request

CHUNKED_MAX_MODEL_LEN = 2048
UNCHUNKED_MAX_MODEL_LEN = 1024


def random_case(seed: int) -> ParityCase:
    rng = np.random.default_rng(seed)
    chunked = bool(rng.random() < 0.75)
    mml = CHUNKED_MAX_MODEL_LEN if chunked else UNCHUNKED_MAX_MODEL_LEN
    max_num_seqs = int(rng.choice([1, 2, 3, 4, 8, 16, 32]))
    if chunked:
        budget = int(rng.choice([16, 32, 48, 64, 100, 128, 256, 512, 2048]))
    else:
        budget = int(rng.choice([mml, mml + 100, 2 * mml]))
    budget = max(budget, max_num_seqs)
    block_size = int(rng.choice([16, 32]))
    min_blocks = -(-mml // block_size)
    tight = rng.random() < 0.5
    num_blocks = int(rng.integers(min_blocks, 2 * min_blocks + 1)) if tight else int(rng.integers(2 * min_blocks, 8 * min_blocks))
    priority = bool(rng.random() < 0.3)
    levels = int(rng.integers(2, 4)) if priority else 1

    n = int(rng.integers(1, 41))
    gaps = np.where(rng.random(n) < 0.4, 0, rng.integers(1, 25, n))
    gaps[0] = rng.integers(0, 3)
    steps = np.cumsum(gaps)
    requests = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.3:
            prompt = int(rng.integers(1, 33))
        elif kind < 0.8:
            prompt = int(rng.integers(33, 400))
        else:
            prompt = int(rng.integers(400, mml - 200))  # long: often beyond the token budget
        output = int(rng.integers(1, 4)) if rng.random() < 0.15 else int(rng.integers(4, 200))
        output = min(output, mml - prompt)
        requests.append(Request(arrival_step=int(steps[i]), prompt_tokens=prompt, output_tokens=output,
                                priority=int(rng.integers(0, levels))))
    return ParityCase(requests=tuple(requests), max_num_seqs=max_num_seqs, max_num_batched_tokens=budget,
                      chunked_prefill=chunked, block_size=block_size, num_blocks=num_blocks, max_model_len=mml,
                      policy="priority" if priority else "fcfs", name=f"random-{seed}")


def random_prefix_case(seed: int) -> ParityCase:
    """`random_case(seed)` with prefix caching on. A request opens with one of one to three
    system prompts (16-600 tokens), or opens a conversation, or takes the next turn of one: its
    prompt is an earlier turn's prompt and output plus a new message, so it can reuse that turn's
    output blocks too (whether they are computed and still cached when it arrives is up to the
    schedule). A conversation is one shared stream: every token of its turns is the stream's."""
    base = random_case(seed)
    rng = np.random.default_rng([seed, 1])
    groups = int(rng.integers(1, 4))
    system = rng.integers(16, 600, groups)
    requests: list[Request] = []
    for i, r in enumerate(base.requests):
        kind = int(rng.integers(0, groups + 2))  # < groups: that system prompt; groups: new conversation
        turns = [q for q in requests if q.prefix_tokens == q.prompt_tokens + q.output_tokens]
        if kind == groups + 1 and turns:
            prev = turns[int(rng.integers(0, len(turns)))]
            prompt = prev.prompt_tokens + prev.output_tokens + int(rng.integers(1, 64))
            if prompt + r.output_tokens <= base.max_model_len:
                requests.append(Request(r.arrival_step, prompt, r.output_tokens, r.priority,
                                        prefix_group=prev.prefix_group, prefix_tokens=prompt + r.output_tokens))
                continue
        if kind < groups:
            prompt = min(int(system[kind]) + r.prompt_tokens, base.max_model_len - r.output_tokens)
            requests.append(Request(r.arrival_step, prompt, r.output_tokens, r.priority,
                                    prefix_group=kind, prefix_tokens=min(int(system[kind]), prompt)))
        else:  # a new conversation: a stream of its own
            requests.append(Request(r.arrival_step, r.prompt_tokens, r.output_tokens, r.priority,
                                    prefix_group=groups + i, prefix_tokens=r.prompt_tokens + r.output_tokens))
    return replace(base, requests=tuple(requests), enable_prefix_caching=True, name=f"prefix-{seed}")


def random_conversation_case(seed: int) -> ParityCase:
    """`random_case(seed)`'s engine limits with prefix caching on, and requests drawn by servesim's
    own workload generator with `conversation` set (sim/conversation.py): 2-5 turns per
    conversation, each turn's prompt the conversation so far plus a new message. Time is steps
    (one second per step): conversations start 0.02-0.3 per step, turns 5-300 steps apart on
    average, so a turn may come before the previous answer is complete, or after its blocks are
    evicted. Messages and outputs are sized so that a whole conversation fits max_model_len."""
    base = random_case(seed)
    rng = np.random.default_rng([seed, 2])
    turns = int(rng.integers(2, 6))
    per_turn = base.max_model_len // turns
    message_max = max(1, per_turn // 2)
    levels = len({r.priority for r in base.requests}) if base.policy == "priority" else 1
    cfg = WorkloadConfig(
        arrival=ArrivalConfig(kind="poisson", rate_per_s=float(rng.uniform(0.02, 0.3))),
        num_requests=int(rng.integers(2, 41)),
        prompt_tokens=LengthDist("uniform", min=1, max=message_max),
        output_tokens=LengthDist("uniform", min=1, max=min(per_turn - message_max, 200)),
        priorities=tuple(PriorityClass(f"p{lvl}", 1.0 / levels, lvl) for lvl in range(levels)) if levels > 1 else (),
        conversation=ConversationConfig(turns=turns, turn_gap_s=float(rng.uniform(5.0, 300.0))))
    cfg.validate("workload")
    wl = generate_workload(cfg, seed)
    steps = np.floor(wl.arrival_s).astype(np.int64)
    requests = tuple(Request(int(s), int(p), int(o), int(q), prefix_group=int(g), prefix_tokens=int(t))
                     for s, p, o, q, g, t in zip(steps, wl.prompt_tokens, wl.output_tokens, wl.priority,
                                                 wl.prefix_group, wl.prefix_tokens))
    return replace(base, requests=requests, enable_prefix_caching=True, name=f"conversation-{seed}")
