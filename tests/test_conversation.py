"""Multi-turn conversations (sim/conversation.py, `workload.conversation`): each turn extends the
previous one, and with prefix caching a turn reuses the blocks of the turns before it.
tests/test_vllm_parity.py checks such workloads against vLLM's own scheduler step by step."""
import numpy as np
import pytest

from sim.configio import ConfigError
from sim.conversation import turn_prompts
from sim.metrics import summarize
from sim.simulation import run
from sim.workload import generate_workload
from tests.conftest import make_scenario

CONVERSATION = {"workload": {"num_requests": 200, "arrival": {"kind": "poisson", "rate_per_s": 0.5},
                             "prompt_tokens": {"kind": "uniform", "min": 50, "max": 150},
                             "output_tokens": {"kind": "uniform", "min": 20, "max": 80},
                             "conversation": {"turns": 4, "turn_gap_s": 20.0}}}


def workload(patch=CONVERSATION, seed=1):
    s = make_scenario(patch)
    return generate_workload(s.workload, seed)


def by_conversation(wl):
    """Per conversation: its requests' indices in arrival order."""
    out = {}
    for i, g in enumerate(wl.prefix_group):
        out.setdefault(int(g), []).append(i)
    return out


def test_each_turn_extends_the_previous_turn_by_its_output_and_a_new_message():
    wl = workload()
    assert len(wl) == 200
    assert np.all(np.diff(wl.arrival_s) >= 0)
    convs = by_conversation(wl)
    assert len(convs) == 50 and all(len(v) == 4 for v in convs.values())  # 200 requests / 4 turns
    for idx in convs.values():
        p, o = wl.prompt_tokens[idx], wl.output_tokens[idx]
        assert 50 <= p[0] <= 150  # the first turn is its message alone
        message = p[1:] - (p[:-1] + o[:-1])
        assert np.all((50 <= message) & (message <= 150))
    # The whole conversation, outputs included, is one stream.
    assert np.array_equal(wl.prefix_tokens, wl.prompt_tokens + wl.output_tokens)


def test_conversations_start_at_the_arrival_rate_and_turns_follow_at_the_gap():
    patch = {"workload": {**CONVERSATION["workload"], "num_requests": 4000}}
    wl = workload(patch, seed=5)
    convs = by_conversation(wl)
    starts = np.sort([wl.arrival_s[v[0]] for v in convs.values()])
    assert np.mean(np.diff(starts)) == pytest.approx(2.0, rel=0.1)  # rate 0.5 conversations/s
    gaps = np.concatenate([np.diff(wl.arrival_s[v]) for v in convs.values()])
    assert np.mean(gaps) == pytest.approx(20.0, rel=0.1)


def test_turn_prompts_accumulates_per_conversation_in_any_arrival_order():
    conv, turn = np.array([0, 1, 0, 1, 0]), np.array([0, 0, 1, 1, 2])
    message, output = np.array([10, 5, 3, 4, 2]), np.array([1, 2, 6, 7, 9])
    assert turn_prompts(conv, turn, message, output).tolist() == [10, 5, 10 + 1 + 3, 5 + 2 + 4, 10 + 1 + 3 + 6 + 2]
    with pytest.raises(ValueError, match="without gaps"):
        turn_prompts(np.array([0, 0]), np.array([0, 2]), np.array([1, 1]), np.array([1, 1]))


def test_priority_is_drawn_per_conversation():
    patch = {"workload": {**CONVERSATION["workload"], "priorities": [{"name": "a", "share": 0.5, "level": 0},
                                                                      {"name": "b", "share": 0.5, "level": 1}]}}
    wl = workload(patch)
    levels = [set(wl.priority[v].tolist()) for v in by_conversation(wl).values()]
    assert all(len(s) == 1 for s in levels) and {0, 1} == set().union(*levels)


def test_same_seed_same_conversations_and_no_section_leaves_workloads_unchanged():
    assert np.array_equal(workload().prompt_tokens, workload().prompt_tokens)
    plain = {"workload": {k: v for k, v in CONVERSATION["workload"].items() if k != "conversation"}}
    a, b = workload(plain), workload(plain)
    assert a.prefix_group is None and np.array_equal(a.arrival_s, b.arrival_s)


@pytest.fixture(scope="module")
def conversation_runs():
    on = run(make_scenario(CONVERSATION, ["serving.enable_prefix_caching=true"]), seed=2)
    off = run(make_scenario(CONVERSATION), seed=2)
    return on, off


def test_later_turns_hit_the_blocks_of_earlier_turns(conversation_runs):
    on, off = conversation_runs
    assert summarize(off)["prefix_cache_hit_rate"] == 0
    req = on.requests
    assert (req["generated_tokens"] == req["output_tokens"]).all()
    wl = workload(seed=2)
    first = np.zeros(len(wl), bool)
    first[[v[0] for v in by_conversation(wl).values()]] = True
    hits = req["prefix_hit_tokens"].to_numpy()
    assert (hits[first] == 0).all()  # a conversation's first turn shares nothing
    # A later turn arriving 20 s (on average) after the previous one, on an idle engine with a
    # roomy pool: it finds every full block of the previous turn's prompt and output (all but the
    # last output token, which was sampled but never fed back, so has no KV).
    prev = {v[k]: v[k - 1] for v in by_conversation(wl).values() for k in range(1, len(v))}
    done = {i: j for i, j in prev.items() if req["finish_s"][j] < req["arrival_s"][i]}
    assert len(done) > 0.8 * len(prev)
    bs = on.scenario.serving.block_size_tokens
    for i, j in done.items():
        computed = wl.prompt_tokens[j] + wl.output_tokens[j] - 1
        assert hits[i] == (min(computed, wl.prompt_tokens[i] - 1) // bs) * bs
    assert summarize(on)["prefix_cache_hit_rate"] > 0.5
    assert summarize(on)["ttft_s_p50"] < summarize(off)["ttft_s_p50"]


@pytest.mark.parametrize("change, where", [
    ({"turns": 1, "turn_gap_s": 5.0}, "workload.conversation.turns"),
    ({"turns": 3, "turn_gap_s": 0.0}, "workload.conversation.turn_gap_s"),
    ({"turns": 3}, "workload.conversation.turn_gap_s"),
    ({"turns": 3, "turn_gap_s": 5.0, "gap": 1}, "workload.conversation.gap"),
])
def test_bad_conversation_settings_name_the_field(change, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        make_scenario({"workload": {**CONVERSATION["workload"], "conversation": change}})


@pytest.mark.parametrize("patch, where", [
    ({"arrival": {"kind": "closed_loop", "concurrency": 4}}, "workload.arrival.kind"),
    ({"shared_prefix_tokens": 64}, "workload.shared_prefix_tokens"),
])
def test_conversations_are_refused_where_they_are_not_modelled(patch, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        make_scenario({"workload": {**CONVERSATION["workload"], **patch}})
