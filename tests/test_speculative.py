"""Speculative decoding as vLLM configures it: methods, acceptance in vLLM's terms, verify cost under load."""
import numpy as np
import pytest

from sim.configio import ConfigError
from sim.metrics import summarize
from sim.scenario import SchedulerConfig, scenario_from_dict
from sim.schedulers import SCHEDULERS
from sim.simulation import build_memory, run
from sim.speculative import (SpeculativeConfig, Speculation, alpha_for_mean_accepted, drafter_for, mean_accepted,
                             mean_tokens_per_step)

from conftest import BASE, make_scenario
from test_schedulers import FakeReplica, FakeTable

DRAFT = {"draft_model": "llama-3.2-1b", "num_speculative_tokens": 4}


def _tpot(arrival: dict, spec: dict | None, num_requests: int, lengths: int | None = None) -> float:
    patch: dict = {"workload": {"arrival": arrival, "num_requests": num_requests}}
    if lengths is not None:
        patch["workload"].update(output_tokens={"kind": "constant", "value": lengths},
                                 prompt_tokens={"kind": "constant", "value": lengths})
    if spec is not None:
        patch["serving"] = {"speculative": spec}
    return summarize(run(make_scenario(patch)))["tpot_s_mean"]


# --- acceptance in vLLM's terms ----------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 4, 7])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.6, 0.9, 0.99])
def test_chain_probability_round_trips_through_vllm_numbers(k, alpha):
    accepted = mean_accepted(k, alpha)
    assert 0.0 <= accepted <= k
    assert mean_tokens_per_step(k, alpha) == pytest.approx(1.0 + accepted)
    assert alpha_for_mean_accepted(k, accepted) == pytest.approx(alpha, abs=1e-9)


def test_vllm_acceptance_numbers_give_the_mean_acceptance_length_they_state():
    rate = SpeculativeConfig(**DRAFT, draft_acceptance_rate=0.55)
    assert rate.mean_tokens_per_step == pytest.approx(1.0 + 0.55 * 4)  # accepted / drafted * k, plus the bonus
    length = SpeculativeConfig(**DRAFT, mean_acceptance_length=2.9)
    assert length.mean_tokens_per_step == pytest.approx(2.9)
    rates = SpeculativeConfig(**DRAFT, per_position_acceptance_rates=(0.8, 0.6, 0.3, 0.1))
    assert rates.alpha is None and rates.mean_tokens_per_step == pytest.approx(2.8)
    legacy = SpeculativeConfig(**DRAFT, acceptance_rate=0.6)  # the old key: the chain probability itself
    assert legacy.alpha == 0.6 and legacy.mean_tokens_per_step == pytest.approx((1 - 0.6 ** 5) / 0.4)
    assert SpeculativeConfig(**DRAFT).alpha == 0.7  # the long-standing default
    assert "mean acceptance length 2.90" in length.describe()


def test_per_position_rates_are_what_the_sampler_draws():
    cfg = SpeculativeConfig(**DRAFT, per_position_acceptance_rates=(0.9, 0.5, 0.5, 0.2))
    spec = Speculation(cfg, None, make_scenario().gpu_spec, 1, "bf16", 1000, np.random.default_rng(3))
    tokens = spec.sample_tokens(200_000)
    assert tokens.min() >= 1 and tokens.max() <= 5
    observed = [(tokens - 1 >= i).mean() for i in range(1, 5)]
    np.testing.assert_allclose(observed, [0.9, 0.5, 0.5, 0.2], atol=0.01)


def test_a_run_emits_the_mean_acceptance_length_per_step():
    sc = make_scenario({"workload": {"arrival": {"kind": "closed_loop", "concurrency": 1}, "num_requests": 20,
                                     "output_tokens": {"kind": "constant", "value": 400}},
                        "serving": {"speculative": {**DRAFT, "num_speculative_tokens": 3,
                                                    "draft_acceptance_rate": 0.5}}})
    res = run(sc)
    tokens = int(res.requests["output_tokens"].sum() - len(res.requests))  # tokens after the first
    steps = res.itl.total  # one ITL entry per (sequence, step) that emitted
    assert tokens / steps == pytest.approx(1.0 + 0.5 * 3, rel=0.05)


@pytest.mark.parametrize("spec, field, words", [
    ({**DRAFT, "acceptance_rate": 0.5, "mean_acceptance_length": 2.0}, "mean_acceptance_length", "one acceptance"),
    ({**DRAFT, "mean_acceptance_length": 5.5}, "mean_acceptance_length", "1 .. num_speculative_tokens + 1 = 5"),
    ({**DRAFT, "draft_acceptance_rate": 1.5}, "draft_acceptance_rate", "accepted / drafted"),
    ({**DRAFT, "per_position_acceptance_rates": [0.5, 0.6, 0.1, 0.0]}, "per_position_acceptance_rates",
     "non-increasing"),
    ({**DRAFT, "per_position_acceptance_rates": [0.5]}, "per_position_acceptance_rates", "4 entries"),
    ({"method": "ngram", "draft_model": "llama-3.2-1b"}, "draft_model", "only method draft_model"),
    ({"method": "draft_model", "num_speculative_tokens": 2}, "draft_model", "needs a draft model"),
    ({"method": "medusa"}, "method", "eagle3"),
])
def test_bad_speculative_settings_get_one_line_naming_the_field(spec, field, words):
    with pytest.raises(ConfigError) as info:
        make_scenario({"serving": {"speculative": spec}})
    message = str(info.value)
    assert "\n" not in message and f"serving.speculative.{field}" in message and words in message


# --- what each method costs --------------------------------------------------------------

def test_methods_cost_what_their_proposer_runs():
    """At one sequence (weight-bound), equal acceptance: n-gram drafts on the CPU, an EAGLE-3 head
    (one layer, 32k-token LM head) is cheaper than an EAGLE head (one layer, the full LM head),
    and both are cheaper than a separate 1B draft model."""
    alone = {"kind": "closed_loop", "concurrency": 1}
    tpot = {m: _tpot(alone, {"method": m, "num_speculative_tokens": 4, "draft_acceptance_rate": 0.6,
                             **({"draft_model": "llama-3.2-1b"} if m == "draft_model" else {})}, 12)
            for m in ("ngram", "eagle3", "eagle", "mtp", "draft_model")}
    assert tpot["ngram"] < tpot["eagle3"] < tpot["eagle"] < tpot["draft_model"]
    assert tpot["mtp"] == pytest.approx(tpot["eagle"], rel=0.05)  # both: one target-shaped layer + the LM head
    assert tpot["draft_model"] < _tpot(alone, None, 12)  # and all of them still help here


def test_draft_memory_follows_the_method():
    def weights(spec):
        return build_memory(make_scenario({"serving": {"speculative": spec}})).weights_bytes

    plain = build_memory(make_scenario()).weights_bytes
    ngram = weights({"method": "ngram"})
    eagle = weights({"method": "eagle"})
    draft = weights(DRAFT)
    assert ngram == plain < eagle < draft  # a head shares the target's embedding and LM head
    target = make_scenario().model_spec
    head = drafter_for(SpeculativeConfig(method="eagle", draft_layers=2), target, "s")
    assert head.spec.num_layers == 2 and head.spec.vocab_size == target.vocab_size
    assert drafter_for(SpeculativeConfig(method="eagle3"), target, "s").spec.vocab_size == 32_000


def test_the_draft_model_also_prefills_the_prompt():
    """The proposer's first pass runs over the step's tokens: a lone long prompt's TTFT rises."""
    def ttft(spec):
        patch = {"workload": {"arrival": {"kind": "closed_loop", "concurrency": 1}, "num_requests": 6,
                              "prompt_tokens": {"kind": "constant", "value": 2000},
                              "output_tokens": {"kind": "constant", "value": 4}}}
        if spec:
            patch["serving"] = {"speculative": spec}
        return summarize(run(make_scenario(patch)))["ttft_s_mean"]

    base = ttft(None)
    assert ttft(DRAFT) > base * 1.03
    assert ttft({"method": "ngram"}) == pytest.approx(base, rel=1e-3)  # nothing to prefill on the CPU


# --- verify cost: the speed-up shrinks with load and can become a slowdown ---------------

def test_speedup_shrinks_with_load_and_turns_into_a_slowdown_when_compute_bound():
    spec = {**DRAFT, "draft_acceptance_rate": 0.5}  # mean acceptance length 3
    low = _tpot({"kind": "poisson", "rate_per_s": 1.0}, None, 300) / _tpot({"kind": "poisson", "rate_per_s": 1.0},
                                                                         spec, 300)
    high = _tpot({"kind": "poisson", "rate_per_s": 20.0}, None, 300) / _tpot({"kind": "poisson", "rate_per_s": 20.0},
                                                                           spec, 300)
    assert low > 1.5  # weight-bound: verifying 5 positions costs about one, 3 tokens come out
    assert high < low - 0.4
    # 128 sequences verifying 5 positions each: the step is compute-bound and pays for every
    # rejected position; with mean acceptance length 2 the extra work outweighs the tokens gained.
    poor = {**DRAFT, "mean_acceptance_length": 2.0}
    loop = {"kind": "closed_loop", "concurrency": 128}
    slow = _tpot(loop, None, 512, lengths=200) / _tpot(loop, poor, 512, lengths=200)
    assert slow < 0.9
    alone = {"kind": "closed_loop", "concurrency": 1}
    assert _tpot(alone, None, 8, lengths=200) / _tpot(alone, poor, 8, lengths=200) > 1.1  # the same config helps alone


def test_draft_tokens_count_against_the_token_budget():
    """vLLM schedules a decoding request's k drafts with it (num_tokens_with_spec): they take
    max_num_batched_tokens from the prompts waiting to prefill."""
    def prefill_chunk(lookahead):
        table = FakeTable([8, 8, 500], [50, 50, 50])
        sched = SCHEDULERS["continuous"](SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=64))
        rep = FakeReplica(table, 1000)
        rep.decode_lookahead = lookahead
        for r in range(2):
            sched.add(rep, r)
        sched.schedule(rep)  # both short prompts prefill
        b = rep.running
        b.computed[:2] += b.chunk[:2]
        b.num_tokens[:2] += 1  # each sampled its first token: now decoding
        b.chunk[:2] = 0
        sched.add(rep, 2)
        sched.schedule(rep)
        return int(b.chunk[2])

    assert prefill_chunk(0) == 64 - 2
    assert prefill_chunk(4) == 64 - 2 * 5


# --- vLLM's speculative_config -------------------------------------------------------------

@pytest.mark.parametrize("config, expect", [
    ('{"method": "eagle3", "model": "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B", "num_speculative_tokens": 3}',
     {"method": "eagle3", "num_speculative_tokens": 3}),
    ('{"model": "yuhuili/EAGLE-LLaMA3.1-Instruct-8B", "num_speculative_tokens": 2}', {"method": "eagle"}),
    ('{"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 4}', {"method": "ngram"}),
    ('{"method": "deepseek_mtp", "num_speculative_tokens": 1}', {"method": "mtp"}),
    ('{"model": "llama-3.2-1b", "num_speculative_tokens": 3, "rejection_sample_method": "synthetic", '
     '"synthetic_acceptance_length": 2.5}', {"method": "draft_model", "per_position_acceptance_rates": (1.0, 0.5, 0.0)}),
])
def test_vllm_speculative_config_is_read(config, expect):
    sc = scenario_from_dict(dict(BASE), vllm_args=f"--speculative-config '{config}'")
    spec = sc.serving.speculative
    for key, value in expect.items():
        assert getattr(spec, key) == value
