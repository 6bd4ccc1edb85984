"""Paged KV-cache block manager of one replica: a pool of fixed-size blocks, counted per request.

Memory answers yes or no: `allocate` either gives a request enough blocks for its
tokens or changes nothing and returns False; callers never count blocks. No prefix
caching, so a block is owned by exactly one request and only counts matter.

Invariant: 0 <= num_free_blocks and sum(held) + num_free_blocks == num_blocks.
"""
from __future__ import annotations

from array import array

import numpy as np

SMALL = 24  # up to this many requests, per-request arithmetic runs on plain Python integers


class KVCache:
    tracks_block_order = False  # only counts: the order of allocations and frees within a step is moot

    def __init__(self, num_blocks: int, block_size_tokens: int, num_requests: int):
        if num_blocks < 1 or block_size_tokens < 1:
            raise ValueError("KVCache needs at least one block of at least one token")
        self.num_blocks = int(num_blocks)
        self.block_size_tokens = int(block_size_tokens)
        self.num_free_blocks = int(num_blocks)
        # Blocks held, by request id: plain integers in an array.array (scalar reads and writes at list
        # speed, for the per-decision paths) and the same memory seen as a numpy array (the batch paths).
        self._held_ints = array("q", bytes(8 * num_requests))
        self._held = np.frombuffer(self._held_ints, dtype=np.int64)

    # --- queries -------------------------------------------------------------
    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    def held_blocks(self, req: int) -> int:
        return self._held_ints[req]

    def _held_list(self, reqs: list) -> list[int]:
        """Blocks held by each of `reqs` (a list), as plain integers."""
        if len(reqs) <= SMALL:
            held = self._held_ints
            return [held[r] for r in reqs]
        return self._held[reqs].tolist()

    def _blocks(self, num_tokens):
        return (num_tokens + (self.block_size_tokens - 1)) // self.block_size_tokens  # ceil, on integers

    def can_allocate(self, req: int, num_tokens: int) -> bool:
        """Could `req` hold `num_tokens` tokens in total?"""
        return self._blocks(num_tokens) - self._held_ints[req] <= self.num_free_blocks

    def cache_hit_tokens(self, req: int, num_tokens: int) -> int:
        """Tokens of a waiting request found in the prefix cache (none here: no prefix caching)."""
        return 0

    def hit_may_grow(self, req: int, num_tokens: int, running: np.ndarray) -> bool:
        """Could a request in `running` fill a block that waiting `req` would then find cached?
        Never here: without prefix caching nothing is found."""
        return False

    def can_admit(self, req: int, num_tokens: int, hit_tokens: int) -> bool:
        """Could a waiting request with `num_tokens` known tokens be held whole (its cached prefix
        of `hit_tokens` included)? The admission gate of vLLM's scheduler."""
        return self.can_allocate(req, num_tokens)

    def admit(self, req: int, hit_tokens: int, num_tokens: int) -> bool:
        """Take a waiting request's cached prefix and grow it to `num_tokens`; all or nothing."""
        return self.allocate(req, num_tokens)

    def fits_alone(self, num_tokens: int) -> bool:
        """Could a request with `num_tokens` tokens ever be held, with the cache otherwise empty?"""
        return self._blocks(num_tokens) <= self.num_blocks

    # --- changes -------------------------------------------------------------
    def allocate(self, req: int, num_tokens: int) -> bool:
        """Grow `req` to hold `num_tokens` tokens in total. False (and no change) if blocks are short."""
        held = self._held_ints
        extra = self._blocks(num_tokens) - held[req]
        if extra <= 0:
            return True
        if extra > self.num_free_blocks:
            return False
        held[req] += extra
        self.num_free_blocks -= extra
        return True

    def allocate_many(self, reqs: np.ndarray, num_tokens: np.ndarray) -> bool:
        """All-or-nothing `allocate` for several requests."""
        if len(reqs) <= SMALL:  # plain integers: a loop costs less than numpy's calls on a few requests
            bs, up = self.block_size_tokens, self.block_size_tokens - 1
            extra = [e if (e := (t + up) // bs - h) > 0 else 0
                     for t, h in zip(num_tokens.tolist(), self._held[reqs].tolist())]
            total = sum(extra)
        else:
            extra = np.maximum(self._blocks(num_tokens) - self._held[reqs], 0)
            total = int(extra.sum())
        if total > self.num_free_blocks:
            return False
        if total:  # most decode steps start no new block
            self._held[reqs] += extra
            self.num_free_blocks -= total
        return True

    def allocate_lists(self, reqs: list, num_tokens: list) -> bool:
        """`allocate_many` on plain lists (a few requests: sim/engine_small.py)."""
        bs, up, held = self.block_size_tokens, self.block_size_tokens - 1, self._held_ints
        extra = [(r, e) for r, t in zip(reqs, num_tokens) if (e := (t + up) // bs - held[r]) > 0]
        if not extra:  # most decode steps start no new block
            return True
        total = sum(e for _, e in extra)
        if total > self.num_free_blocks:
            return False
        for r, e in extra:
            held[r] += e
        self.num_free_blocks -= total
        return True

    def free(self, req: int) -> None:
        held = self._held_ints
        self.num_free_blocks += held[req]
        held[req] = 0

    def free_many(self, reqs: np.ndarray) -> None:
        self.num_free_blocks += sum(self._held[reqs].tolist())
        self._held[reqs] = 0

    # --- bulk look-ahead -----------------------------------------------------
    def steps_that_fit(self, reqs: np.ndarray, tokens_now: np.ndarray, steps_left: np.ndarray,
                       tokens_per_step: int, horizon: int) -> int:
        """How many of the next `horizon` decode steps fit without running out of blocks.

        Before step i (0-based) request j needs room for tokens_now[j] + i * tokens_per_step
        tokens, as long as it is still running (i < steps_left[j]); a finished request frees
        its blocks. Returns the largest n <= horizon such that steps 0..n-1 all fit.
        """
        if horizon <= 0 or len(reqs) == 0:
            return max(horizon, 0)
        held = self._held[reqs]
        # Even the peak (everyone at their last step, nobody freeing) fits: the common case.
        if len(reqs) <= SMALL:  # plain integers: a loop costs less than numpy's calls on a few requests
            bs, peak = self.block_size_tokens, 0
            for t, s, h in zip(tokens_now.tolist(), steps_left.tolist(), held.tolist()):
                last = (s if s < horizon else horizon) - 1  # last step it runs in the horizon
                extra = (t + (last if last > 0 else 0) * tokens_per_step + bs - 1) // bs - h
                if extra > 0:
                    peak += extra
        else:
            last = np.minimum(steps_left, horizon) - 1  # last step each request runs in the horizon
            peak = int(np.maximum(self._blocks(tokens_now + np.maximum(last, 0) * tokens_per_step) - held, 0).sum())
        if peak <= self.num_free_blocks:
            return horizon
        # Step i needs the blocks the running requests still lack, from the free pool plus what
        # the finished ones gave back.
        released = self.released_on_finish(reqs)
        steps = np.arange(horizon)
        active = steps[:, None] < steps_left[None, :]
        lack = ((self._blocks(tokens_now[None, :] + steps[:, None] * tokens_per_step) - held) * active).sum(axis=1)
        freed = (released * ~active).sum(axis=1)
        over = np.flatnonzero(lack > self.num_free_blocks + freed)
        return int(over[0]) if len(over) else horizon

    def steps_that_fit_lists(self, reqs: list, tokens_now: list, steps_left: list, horizon: int) -> int:
        """`steps_that_fit` at one token per step, on plain lists (sim/engine_small.py)."""
        if horizon <= 0 or not reqs:
            return max(horizon, 0)
        bs, peak = self.block_size_tokens, 0
        for t, s, h in zip(tokens_now, steps_left, self._held_list(reqs)):
            last = (s if s < horizon else horizon) - 1  # last step it runs in the horizon
            extra = (t + (last if last > 0 else 0) + bs - 1) // bs - h
            if extra > 0:
                peak += extra
        if peak <= self.num_free_blocks:
            return horizon
        return self.steps_that_fit(np.array(reqs, dtype=np.int64), np.array(tokens_now, dtype=np.int64),
                                   np.array(steps_left, dtype=np.int64), 1, horizon)

    def blocks_by_holders(self, reqs: np.ndarray) -> list[tuple[frozenset, int]]:
        """The blocks `reqs` hold, as (the requests holding them, how many): a block goes back to the
        free pool when all its holders have finished. Here each request holds its blocks alone."""
        return [(frozenset([int(r)]), int(self._held[r])) for r in reqs if self._held[r]]

    def released_on_finish(self, reqs: np.ndarray) -> np.ndarray:
        """Blocks each request gives back to the free pool when it finishes."""
        return self._held[reqs]
