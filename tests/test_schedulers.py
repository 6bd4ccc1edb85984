"""Scheduler decisions, one step at a time, against a minimal stand-in replica."""
import numpy as np
import pytest

from sim.batch import RunningBatch
from sim.kv_cache import KVCache
from sim.scenario import SchedulerConfig
from sim.schedulers import SCHEDULERS, StepPlan, Wait


class FakeTable:
    def __init__(self, prompts, outputs, priorities=None, arrivals=None):
        n = len(prompts)
        self.prompt_tokens = np.array(prompts)
        self.output_tokens = np.array(outputs)
        self.priority = np.array(priorities if priorities is not None else [0] * n)
        self.arrival_s = np.array(arrivals if arrivals is not None else np.arange(n, dtype=float))
        self.generated = np.zeros(n, dtype=np.int64)
        self.preemptions = np.zeros(n, dtype=np.int64)


class FakeReplica:
    """Just the mechanisms a scheduler may call (admit, preempt, tokens_known)."""

    def __init__(self, table, num_blocks, block_size=16, now=100.0):
        self.table = table
        self.kv = KVCache(num_blocks, block_size, len(table.prompt_tokens))
        self.running = RunningBatch(8)
        self.now = now
        self.decode_lookahead = 0
        self.admitted, self.preempted = [], []

    def tokens_known(self, req):
        return int(self.table.prompt_tokens[req] + self.table.generated[req])

    def admit(self, req, chunk, cached=0):
        self.admitted.append(req)
        t = self.table
        return self.running.add(req, int(t.prompt_tokens[req]), int(t.output_tokens[req]), self.tokens_known(req),
                                int(t.priority[req]), chunk, computed=cached)

    def preempt(self, slot):
        b = self.running
        req = int(b.req[slot])
        self.table.generated[req] = b.num_tokens[slot] - b.prompt[slot]
        self.kv.free(req)
        keep = np.ones(b.n, dtype=bool)
        keep[slot] = False
        b.remove(keep)
        self.preempted.append(req)
        return req


def make(policy, table, num_blocks=1000, **cfg):
    sched = SCHEDULERS[policy](SchedulerConfig(policy=policy, **cfg))
    rep = FakeReplica(table, num_blocks)
    for r in range(len(table.prompt_tokens)):
        sched.add(rep, r)
    return sched, rep


def test_continuous_admits_within_token_budget_and_chunks_the_rest():
    table = FakeTable([300, 300, 300], [10, 10, 10])
    sched, rep = make("continuous", table, max_num_batched_tokens=700, chunked_prefill=True)
    plan = sched.schedule(rep)
    assert isinstance(plan, StepPlan)
    assert rep.admitted == [0, 1, 2]
    assert list(rep.running.view("chunk")) == [300, 300, 100]  # the third prompt is chunked
    assert plan.follow == "none"  # a prefill continues next step


def test_continuous_without_chunking_waits_for_budget():
    table = FakeTable([300, 300, 300], [10, 10, 10])
    sched, rep = make("continuous", table, max_num_batched_tokens=700, chunked_prefill=False)
    sched.schedule(rep)
    assert rep.admitted == [0, 1]
    assert sched.num_waiting == 1


def test_continuous_respects_max_num_seqs_and_fast_forwards_until_a_completion():
    table = FakeTable([10, 10, 10], [5, 5, 5])
    sched, rep = make("continuous", table, max_num_seqs=2)
    plan = sched.schedule(rep)
    assert rep.admitted == [0, 1]
    assert plan.follow == "until_completion" and not plan.interruptible


def test_continuous_admission_needs_kv_blocks():
    table = FakeTable([64, 64], [5, 5])
    sched, rep = make("continuous", table, num_blocks=5)  # 64 tokens = 4 blocks each
    sched.schedule(rep)
    assert rep.admitted == [0]
    assert rep.kv.num_used_blocks == 4


def test_continuous_preempts_newest_when_blocks_run_out():
    table = FakeTable([16, 16, 16], [100, 100, 100])
    sched, rep = make("continuous", table, num_blocks=3)
    sched.schedule(rep)
    assert rep.admitted == [0, 1, 2]
    b = rep.running
    b.computed[:3] = 16  # prompts done, each holds exactly one full block
    b.num_tokens[:3] = 17
    sched.schedule(rep)  # every decode needs a second block: only one sequence can keep going
    assert rep.preempted == [2, 1]  # newest first
    assert list(b.view("req")) == [0]
    assert sched.num_waiting == 2


def test_priority_orders_waiting_by_level_then_arrival():
    table = FakeTable([10, 10, 10], [5, 5, 5], priorities=[1, 0, 1], arrivals=[0.0, 1.0, 2.0])
    sched, rep = make("priority", table, max_num_seqs=1)
    sched.schedule(rep)
    assert rep.admitted == [1]


def test_priority_never_preempts_running_for_urgent_waiting():
    # vLLM 0.32's priority policy orders the queue and picks victims; a waiting request,
    # however urgent, waits for a slot (calibration/parity checks this against vLLM).
    table = FakeTable([10, 10], [50, 50], priorities=[1, 0], arrivals=[0.0, 1.0])
    sched = SCHEDULERS["priority"](SchedulerConfig(policy="priority", max_num_seqs=1))
    rep = FakeReplica(table, 100)
    sched.add(rep, 0)
    sched.schedule(rep)
    assert rep.admitted == [0]
    sched.add(rep, 1)
    assert sched.should_interrupt(rep, 1)  # first in line: the fast-forward must stop at the next completion
    plan = sched.schedule(rep)
    assert rep.preempted == [] and list(rep.running.view("req")) == [0]
    assert plan.follow == "until_completion"


def test_priority_victim_is_least_urgent_then_latest_arrival_not_newest_slot():
    # Slots in admission order [2, 0, 1]: request 2 (arrived last) was admitted first. The victim
    # is the least urgent level, and among those the latest arrival (vLLM's max(priority, arrival)).
    table = FakeTable([16, 16, 16], [100, 100, 100], priorities=[1, 1, 0], arrivals=[0.0, 1.0, 2.0])
    sched = SCHEDULERS["priority"](SchedulerConfig(policy="priority"))
    rep = FakeReplica(table, 3)
    for r in (2, 0, 1):
        sched.add(rep, r)
    sched.schedule(rep)
    assert list(rep.running.view("req")) == [2, 0, 1]
    b = rep.running
    b.computed[:3] = 16
    b.num_tokens[:3] = 17  # every decode needs a second block; the pool is full
    sched.schedule(rep)
    assert rep.preempted == [1, 0]  # level 1 first, latest arrival first; request 2 (level 0) keeps running
    assert list(b.view("req")) == [2]


def test_admission_needs_the_whole_prompt_to_fit_not_just_the_chunk():
    # vLLM's scheduler_reserve_full_isl: a 200-token prompt needs 13 free blocks to be admitted,
    # though its first 64-token chunk takes only 4.
    table = FakeTable([16, 200], [100, 10])
    sched, rep = make("continuous", table, num_blocks=13, max_num_batched_tokens=64, chunked_prefill=True)
    sched.schedule(rep)
    assert rep.admitted == [0]  # 1 block used, 12 free: 200 tokens do not fit
    assert rep.kv.num_used_blocks == 1
    table2 = FakeTable([16, 200], [100, 10])
    sched2, rep2 = make("continuous", table2, num_blocks=14, max_num_batched_tokens=64, chunked_prefill=True)
    sched2.schedule(rep2)
    assert rep2.admitted == [0, 1]
    assert list(rep2.running.view("chunk")) == [16, 48]
    assert rep2.kv.num_used_blocks == 1 + 3  # blocks only for the chunk computed now


def test_a_running_prefill_can_take_the_budget_from_later_decodes():
    # vLLM serves running sequences in order, each up to the budget left: a partial prefill
    # admitted before a decoding sequence can leave it without a token for a step.
    table = FakeTable([100, 8], [10, 10])
    sched, rep = make("continuous", table, max_num_batched_tokens=64, max_num_seqs=4)
    b = rep.running
    sched.schedule(rep)  # request 0 takes all 64 tokens; request 1 waits for budget
    assert rep.admitted == [0] and list(b.view("chunk")) == [64]
    b.computed[0] = 64
    sched.schedule(rep)  # 36 left for request 0, 8 for request 1
    assert list(b.view("chunk")) == [36, 8]
    b.computed[:2] = [0, 8]
    b.num_tokens[:2] = [101, 9]  # request 1 decodes; request 0 (first slot) has 101 tokens to compute
    plan = sched.schedule(rep)
    assert list(b.view("chunk")) == [64, 0]  # request 1 gets no token this step
    assert plan.follow == "none"


def test_a_step_that_preempts_is_followed_by_a_new_decision():
    table = FakeTable([16, 16], [100, 100])
    sched, rep = make("continuous", table, num_blocks=2)
    sched.schedule(rep)
    b = rep.running
    b.computed[:2] = 16
    b.num_tokens[:2] = 17
    plan = sched.schedule(rep)
    assert rep.preempted == [1]
    assert plan.follow == "none"  # blocks freed by the preemption may admit someone next step


def test_fifo_never_interrupts_for_less_urgent():
    table = FakeTable([10, 10], [50, 50])
    sched, rep = make("continuous", table, max_num_seqs=4)
    sched.schedule(rep)
    assert not sched.should_interrupt(rep, 1)  # nothing waiting behind: the queue is empty


def test_static_waits_to_fill_then_batches_with_padding():
    table = FakeTable([10, 30, 20], [5, 9, 7], arrivals=[99.99, 99.995, 100.0])
    sched = SCHEDULERS["static"](SchedulerConfig(policy="static", batch_size=4, batch_timeout_s=0.05))
    rep = FakeReplica(table, 100)
    for r in range(3):
        sched.add(rep, r)
    action = sched.schedule(rep)
    assert isinstance(action, Wait) and action.until_s == pytest.approx(99.99 + 0.05)
    rep.now = 100.05
    plan = sched.schedule(rep)
    assert plan.padded and plan.follow == "to_end" and not plan.interruptible
    assert rep.admitted == [0, 1, 2]
    # KV reserved for the padded rectangle: longest prompt + longest output = 39 tokens = 3 blocks each
    assert [rep.kv.held_blocks(r) for r in range(3)] == [3, 3, 3]


def test_fifo_is_one_at_a_time():
    table = FakeTable([10, 10], [5, 5])
    sched, rep = make("fifo", table)
    sched.schedule(rep)
    assert rep.admitted == [0] and sched.num_waiting == 1


def test_when_everyone_is_preempted_the_queue_is_tried_again_at_once():
    # A pool smaller than one sequence's need (scenario validation rules this out) must neither
    # stall nor spin: the scheduler asks to be called again now, then finds that nothing fits.
    table = FakeTable([16], [100])
    sched, rep = make("continuous", table, num_blocks=1)
    sched.schedule(rep)
    b = rep.running
    b.computed[0], b.num_tokens[0] = 16, 17  # needs a second block; there is none
    plan = sched.schedule(rep)
    assert rep.preempted == [0] and isinstance(plan, Wait) and plan.until_s == rep.now
    assert sched.schedule(rep) is None and rep.admitted == [0]  # 17 tokens never fit one block
