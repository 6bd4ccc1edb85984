"""Prefix caching (sim/prefix_cache.py): block reuse, eviction order and admission accounting as
vLLM's block pool does them, and what it changes in a run. tests/test_vllm_parity.py checks the
same against vLLM's own scheduler step by step."""
import numpy as np
import pytest

from sim.metrics import summarize
from sim.prefix_cache import PrefixCachingKVCache
from sim.simulation import run
from tests.conftest import make_scenario


def cache(num_blocks, prefix_tokens, groups=None, bs=16):
    n = len(prefix_tokens)
    return PrefixCachingKVCache(num_blocks, bs, np.zeros(n, dtype=np.int64) if groups is None else np.array(groups),
                                np.array(prefix_tokens))


def test_a_shared_prefix_is_found_block_by_block_and_not_the_last_token():
    kv = cache(20, [100, 100, 100, 40], groups=[0, 0, 0, 1])
    assert kv.cache_hit_tokens(1, 120) == 0  # nothing cached yet
    assert kv.admit(0, 0, 120)  # 120 tokens: 7 full blocks, 6 of them inside the 100-token prefix
    assert kv.cache_hit_tokens(1, 120) == 96  # the 6 shared full blocks; block 7 holds request 0's own tokens
    assert kv.cache_hit_tokens(2, 97) == 96
    assert kv.cache_hit_tokens(2, 96) == 80  # all 96 tokens cached, but the last one is always computed
    assert kv.cache_hit_tokens(3, 120) == 0  # another group's system prompt


def test_hits_share_blocks_and_count_once():
    kv = cache(20, [64, 64])
    assert kv.admit(0, 0, 70)  # 5 blocks
    hit = kv.cache_hit_tokens(1, 70)
    assert hit == 64
    assert kv.admit(1, hit, 70)  # 4 shared + 1 own
    assert kv.num_used_blocks == 6
    kv.free(0)
    assert kv.num_used_blocks == 5  # the shared blocks stay with request 1
    kv.free(1)
    assert kv.num_used_blocks == 0 and kv.num_free_blocks == 20


def test_freed_blocks_stay_cached_until_evicted_least_recently_freed_first():
    # Requests 0 and 4 share group 0's prompt, 1 and 3 group 1's; request 2 shares nothing.
    kv = cache(8, [64, 64, 0, 64, 64], groups=[0, 1, 2, 1, 0])
    assert kv.admit(0, 0, 64) and kv.admit(1, 0, 64)  # 4 + 4 blocks: the pool is full
    kv.free(0)
    kv.free(1)
    assert kv.num_free_blocks == 8
    assert kv.cache_hit_tokens(3, 65) == 64  # group 1's prompt is still there after its request left
    assert kv.admit(2, 0, 32)  # two new blocks evict the least recently freed: request 0's tail first
    assert kv.cache_hit_tokens(4, 65) == 32  # group 0 keeps the head of its prompt
    assert kv.cache_hit_tokens(3, 65) == 64


def test_uncached_free_blocks_are_used_before_cached_ones():
    kv = cache(6, [64, 0, 0, 64], groups=[0, 1, 2, 0])
    assert kv.admit(0, 0, 64) and kv.admit(1, 0, 10)  # 4 full (cached) blocks + 1 partial (uncached); 1 unused
    kv.free(0)
    kv.free(1)
    assert kv.admit(2, 0, 32)  # takes the never-used block and the partial one, evicting nothing
    assert kv.num_free_blocks == 4
    assert kv.cache_hit_tokens(3, 65) == 64  # group 0's 4 blocks were not touched


def test_admission_counts_a_hit_on_a_free_cached_block_as_used():
    kv = cache(5, [64, 64])
    assert kv.admit(0, 0, 64)
    kv.free(0)  # 4 cached free blocks + 1 never used
    hit = kv.cache_hit_tokens(1, 80)
    assert hit == 64
    # 80 tokens = 5 blocks: 4 reused (taken out of the free pool) + 1 new = all 5 free blocks.
    assert kv.can_admit(1, 80, hit)
    assert not kv.can_admit(1, 97, hit)
    assert kv.admit(1, hit, 80) and kv.num_free_blocks == 0


def test_fast_forward_look_ahead_counts_a_shared_block_once():
    kv = cache(10, [64, 64])
    assert kv.admit(0, 0, 65)
    assert kv.admit(1, 64, 65)  # 4 shared + 1 own each: 6 used, 4 free
    # Both decode from 66 tokens; request 0 leaves after step 0, giving back only its own block.
    got = kv.steps_that_fit(np.array([0, 1]), np.array([66, 66]), np.array([1, 200]), 1, 200)
    free, expect = 4, 0
    for i in range(200):
        lack = (-(-(66 + i) // 16) - 5) + (0 if i >= 1 else -(-66 // 16) - 5)
        if lack > free + (1 if i >= 1 else 0):
            break
        expect = i + 1
    assert got == expect == 95  # request 1 reaches 160 tokens = 10 blocks: the whole pool


@pytest.fixture(scope="module")
def shared_prompt_runs():
    patch = {"workload": {"num_requests": 300, "shared_prefix_tokens": 1024,
                          "prompt_tokens": {"kind": "uniform", "min": 1100, "max": 1400},
                          "arrival": {"kind": "poisson", "rate_per_s": 6.0}}}
    on = run(make_scenario(patch, ["serving.enable_prefix_caching=true"]), seed=3)
    off = run(make_scenario(patch), seed=3)
    return on, off


def test_a_shared_system_prompt_is_computed_once_and_lowers_ttft(shared_prompt_runs):
    on, off = shared_prompt_runs
    s_on, s_off = summarize(on), summarize(off)
    assert s_off["prefix_cache_hit_rate"] == 0
    # Every request after the first finds the 1,024-token system prompt (64 blocks): ~1024 / 1250.
    assert 0.7 < s_on["prefix_cache_hit_rate"] < 0.85
    assert s_on["ttft_s_p50"] < 0.7 * s_off["ttft_s_p50"]
    req = on.requests
    assert (req["generated_tokens"] == req["output_tokens"]).all()  # conservation holds with reuse
    assert (req["prefix_hit_tokens"] % 16 == 0).all() and (req["prefix_hit_tokens"] < req["prompt_tokens"]).all()


def test_priority_classes_reuse_their_own_system_prompts():
    patch = {"workload": {"num_requests": 150, "shared_prefix_tokens": 256,
                          "priorities": [{"name": "a", "share": 0.5, "level": 0},
                                         {"name": "b", "share": 0.5, "level": 1, "shared_prefix_tokens": 64}]},
             "serving": {"scheduler": {"policy": "priority"}, "num_kv_blocks": 400}}
    res = run(make_scenario(patch, ["serving.enable_prefix_caching=true"]), seed=2)
    req = res.requests
    assert (req["generated_tokens"] == req["output_tokens"]).all()
    assert summarize(res)["prefix_cache_hit_rate"] > 0
    hits = req.groupby("priority_class")["prefix_hit_tokens"].max()
    assert hits["a"] == 256 and hits["b"] == 64  # each class finds its own prompt, never the other's


@pytest.mark.parametrize("patch, words", [
    ({"serving": {"scheduler": {"policy": "static"}}}, "needs scheduler policy continuous or priority"),
    ({"serving": {"speculative": {"draft_model": "llama-3.2-1b", "num_speculative_tokens": 4,
                                  "acceptance_rate": 0.7}}}, "speculative decoding"),
])
def test_prefix_caching_is_refused_where_it_is_not_modelled(patch, words):
    from sim.configio import ConfigError
    with pytest.raises(ConfigError, match=words):
        make_scenario(patch, ["serving.enable_prefix_caching=true"])


def test_a_mooncake_trace_reuses_blocks_its_hash_ids_share():
    import json
    from pathlib import Path
    trace = Path(__file__).resolve().parent.parent / "scenarios" / "traces" / "sample_mooncake.jsonl"
    lines = [json.loads(x) for x in trace.read_text().splitlines()]
    patch = {"workload": {"arrival": {"kind": "trace", "path": str(trace)}, "num_requests": len(lines),
                          "prompt_tokens": None, "output_tokens": None},
             "serving": {"max_model_len": 32768}}
    on = run(make_scenario(patch, ["serving.enable_prefix_caching=true"]), seed=1)
    off = run(make_scenario(patch), seed=1)
    req = on.requests
    assert summarize(off)["prefix_cache_hit_rate"] == 0
    assert summarize(on)["prefix_cache_hit_rate"] > 0.2
    # A request can only reuse 512-token blocks whose ids an earlier request had.
    seen: set = set()
    for i, line in enumerate(lines):
        ids = line["hash_ids"]
        shared = next((k for k, h in enumerate(ids) if h not in seen), len(ids))
        assert req["prefix_hit_tokens"][i] <= min(shared * 512, line["input_length"] - 1)
        seen.update(ids)
    assert (req["generated_tokens"] == req["output_tokens"]).all()


def test_a_waiting_turn_can_gain_hits_while_its_previous_turn_decodes():
    # Request 0 (running) and request 1 (waiting) share stream 0 for 100 tokens; 0 has filled 2 blocks.
    kv = cache(20, [100, 100, 100], groups=[0, 0, 1])
    assert kv.admit(0, 0, 40)  # 2 full blocks cached + a partial one
    assert kv.cache_hit_tokens(1, 90) == 32
    assert kv.hit_may_grow(1, 90, np.array([0]))  # block 2 is 0's to fill, and 1 would hit it
    assert not kv.hit_may_grow(2, 90, np.array([0]))  # another stream
    assert not kv.hit_may_grow(1, 33, np.array([0]))  # it already finds all it could (the last token is computed)
    assert not kv.hit_may_grow(1, 90, np.array([], dtype=np.int64))  # nobody running fills it
