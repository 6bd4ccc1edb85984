"""Multi-turn conversations: each turn's prompt is the whole conversation so far plus a new message.

With `workload.conversation` set, the arrival process starts *conversations*; each brings
`turns` requests. Turn t+1 arrives a gap after turn t arrived (exponential, mean `turn_gap_s`;
open loop: it does not wait for turn t's answer, so a gap shorter than a response sends a turn
whose previous answer is not yet computed, and that part of it cannot hit the cache). Its
prompt is turn t's prompt and output plus a new message drawn from `prompt_tokens`; outputs
are drawn from `output_tokens`. The first turn's prompt is its message alone.

A conversation is one token stream: every token of its turns, prompts and outputs alike, is
the stream's, so with prefix caching a turn reuses the blocks of the turns before it that are
still cached (sim/prefix_cache.py names a block by stream and position).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .configio import require_range

MAX_TURNS = 10_000


@dataclass(frozen=True)
class ConversationConfig:
    """`turns` requests per conversation, arriving `turn_gap_s` apart on average (exponential)."""

    turns: int
    turn_gap_s: float

    def validate(self, path: str) -> None:
        require_range(self.turns, f"{path}.turns", 2, MAX_TURNS, "requests per conversation (1 is no conversation: "
                      "omit the section)")
        require_range(self.turn_gap_s, f"{path}.turn_gap_s", 0.0, 86_400.0,
                      "s (mean gap between a turn's arrival and the next)", lo_open=True)

    def conversations_for(self, num_requests: int | None) -> int | None:
        """Conversations needed for `num_requests` requests (the last may be cut short)."""
        return None if num_requests is None else math.ceil(num_requests / self.turns)


@dataclass(frozen=True)
class Turns:
    """Requests of expanded conversations, sorted by arrival (row i is request i)."""

    arrival_s: np.ndarray
    conversation: np.ndarray  # index of the conversation (its start order)
    turn: np.ndarray  # 0 for the first turn


def expand_turns(cfg: ConversationConfig, start_s: np.ndarray, rng: np.random.Generator) -> Turns:
    """Every turn of conversations starting at `start_s`, sorted by arrival time (ties keep
    conversation then turn order, so a conversation's turns stay in order)."""
    n_conv = len(start_s)
    gaps = rng.exponential(cfg.turn_gap_s, (n_conv, cfg.turns - 1))
    times = np.concatenate([start_s[:, None], start_s[:, None] + np.cumsum(gaps, axis=1)], axis=1).ravel()
    conv = np.repeat(np.arange(n_conv, dtype=np.int64), cfg.turns)
    turn = np.tile(np.arange(cfg.turns, dtype=np.int64), n_conv)
    order = np.argsort(times, kind="stable")
    return Turns(arrival_s=times[order], conversation=conv[order], turn=turn[order])


def turn_prompts(conversation: np.ndarray, turn: np.ndarray, message_tokens: np.ndarray,
                 output_tokens: np.ndarray) -> np.ndarray:
    """Prompt tokens of each request: its conversation's earlier messages and outputs plus its own
    message. Each conversation's turns present must be 0, 1, ... with none missing."""
    order = np.lexsort((turn, conversation))
    c, m = conversation[order], message_tokens[order].astype(np.int64)
    step = m + output_tokens[order].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, len(c)]))  # index of each row's first turn
    if not np.array_equal(turn[order], np.arange(len(c)) - first):
        raise ValueError("every conversation's turns must run 0, 1, 2, ... without gaps")
    cum = np.cumsum(step)
    before = cum - step - (cum[first] - step[first])  # tokens of the conversation's earlier turns
    prompt = np.empty(len(c), dtype=np.int64)
    prompt[order] = before + m
    return prompt
