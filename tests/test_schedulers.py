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

    def admit(self, req, chunk):
        self.admitted.append(req)
        t = self.table
        return self.running.add(req, int(t.prompt_tokens[req]), int(t.output_tokens[req]), self.tokens_known(req),
                                int(t.priority[req]), chunk)

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


def test_priority_preempts_less_urgent_running_for_urgent_waiting():
    table = FakeTable([10, 10], [50, 50], priorities=[1, 0], arrivals=[0.0, 1.0])
    sched = SCHEDULERS["priority"](SchedulerConfig(policy="priority", max_num_seqs=1))
    rep = FakeReplica(table, 100)
    sched.add(rep, 0)
    sched.schedule(rep)
    assert rep.admitted == [0]
    sched.add(rep, 1)
    assert sched.should_interrupt(rep, 1)
    sched.schedule(rep)
    assert rep.preempted == [0] and list(rep.running.view("req")) == [1]


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
