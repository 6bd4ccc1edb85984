"""Paged KV cache with automatic prefix caching, as vLLM v1's block pool keeps it.

A full block of a request's tokens is named by what it holds. Requests share content only
through a prefix: request r's first `prefix_tokens[r]` tokens are the first tokens of a stream
`prefix_group[r]` (a class's system prompt, or a conversation whose turns extend each other);
the rest are its own. So block b of request r is ("shared", group, b) when it lies wholly in the
prefix, else ("own", r, b) -- equal names, equal content, as vLLM's chained block hashes. A
trace that carries hash ids (Mooncake: id k stands for prompt tokens [k*H, (k+1)*H) and, being
chained, for all before them) names a block inside hashed block k ("hash", id_k, b).

As in vLLM (block_pool.py, kv_cache_manager.py):
* a block is registered in the cache as soon as the step that fills it is scheduled;
* a waiting request reuses the longest run of cached blocks from its start, but always
  computes its last known token (hits stop at (tokens - 1) // block_size blocks);
* a freed block keeps its content: uncached blocks go to the front of the free queue, cached
  ones to the back in reverse order (a request's tail first), and a new block is taken from
  the front, evicting what it cached -- least recently freed first;
* a hit on a free cached block takes it out of the free queue, so admission counts it as used.

Invariant: num_free_blocks == len(free uncached) + len(free cached) and every block with
ref count 0 is in exactly one of them.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .kv_cache import KVCache


def prefix_cache_for(workload, num_blocks: int, block_size_tokens: int) -> "PrefixCachingKVCache":
    """A prefix cache whose block names come from the workload: its shared system prompts, or the
    hash ids a trace carries (Mooncake), or none (then only a preempted request's own blocks hit)."""
    n = len(workload)
    group = np.zeros(n, dtype=np.int64) if workload.prefix_group is None else workload.prefix_group
    tokens = np.zeros(n, dtype=np.int64) if workload.prefix_tokens is None else workload.prefix_tokens
    return PrefixCachingKVCache(num_blocks, block_size_tokens, group, tokens, hash_ids=workload.hash_ids,
                                hash_block_tokens=workload.hash_block_tokens, prompt_tokens=workload.prompt_tokens)


class PrefixCachingKVCache(KVCache):
    tracks_block_order = True  # which cached block a new one evicts depends on the order

    def __init__(self, num_blocks: int, block_size_tokens: int, prefix_group: np.ndarray,
                 prefix_tokens: np.ndarray, hash_ids: list[list[int]] | None = None,
                 hash_block_tokens: int | None = None, prompt_tokens: np.ndarray | None = None):
        super().__init__(num_blocks, block_size_tokens, len(prefix_tokens))
        self._group = np.asarray(prefix_group, dtype=np.int64)
        self._prefix = np.asarray(prefix_tokens, dtype=np.int64)
        # A trace's hash ids: id k names prompt tokens [k*H, (k+1)*H) and everything before them.
        self._hash_ids = hash_ids if hash_ids is not None and hash_block_tokens else None
        self._hash_tokens = int(hash_block_tokens or 0)
        if self._hash_ids is not None:
            self._hashed = np.minimum([len(ids) * self._hash_tokens for ids in self._hash_ids],
                                      np.asarray(prompt_tokens, dtype=np.int64))
        self._ref = [0] * self.num_blocks
        self._name: list[tuple | None] = [None] * self.num_blocks  # what a cached block holds
        self._cached: dict[tuple, dict[int, None]] = {}  # name -> blocks holding it, first registered first
        self._free_uncached: list[int] = list(range(self.num_blocks - 1, -1, -1))  # popped from the end
        self._free_cached: OrderedDict[int, None] = OrderedDict()  # LRU: front is evicted first
        self._blocks_of: dict[int, list[int]] = {}
        self._registered: dict[int, int] = {}  # blocks of each request already in the cache

    # --- names ---------------------------------------------------------------
    def _block_name(self, req: int, b: int) -> tuple:
        lo, hi = b * self.block_size_tokens, (b + 1) * self.block_size_tokens
        if self._hash_ids is not None and self._hash_ids[req]:
            k = lo // self._hash_tokens
            if hi <= self._hashed[req] and (hi - 1) // self._hash_tokens == k:  # inside one hashed block
                return ("hash", self._hash_ids[req][k], b)
            return ("own", req, b)
        if hi <= self._prefix[req]:
            return ("shared", int(self._group[req]), b)
        return ("own", req, b)

    # --- queries -------------------------------------------------------------
    def cache_hit_tokens(self, req: int, num_tokens: int) -> int:
        n = 0
        while n < (num_tokens - 1) // self.block_size_tokens and self._block_name(req, n) in self._cached:
            n += 1
        return n * self.block_size_tokens

    def hit_may_grow(self, req: int, num_tokens: int, running: np.ndarray) -> bool:
        """Does a running request share the block after `req`'s cached run (a conversation's next
        turn waiting while the previous turn still decodes into their common stream)? Then that
        block may be filled and cached in any step, and `req` may need fewer new blocks."""
        b = self.cache_hit_tokens(req, num_tokens) // self.block_size_tokens
        if b >= (num_tokens - 1) // self.block_size_tokens:
            return False  # every block it could hit is cached already
        name = self._block_name(req, b)
        return name[0] != "own" and any(self._block_name(int(r), b) == name for r in running)

    def _hits(self, req: int, hit_tokens: int) -> list[int]:
        return [next(iter(self._cached[self._block_name(req, b)])) for b in range(hit_tokens // self.block_size_tokens)]

    def can_admit(self, req: int, num_tokens: int, hit_tokens: int) -> bool:
        hits = self._hits(req, hit_tokens)
        evictable = sum(1 for blk in hits if self._ref[blk] == 0)
        return self._blocks(num_tokens) - len(hits) + evictable <= self.num_free_blocks

    def blocks_by_holders(self, reqs: np.ndarray) -> list[tuple[frozenset, int]]:
        holders: dict[int, set] = {}
        for r in np.asarray(reqs).tolist():
            for blk in self._blocks_of.get(r, ()):
                holders.setdefault(blk, set()).add(r)
        groups: dict[frozenset, int] = {}
        for hs in holders.values():
            key = frozenset(hs)
            groups[key] = groups.get(key, 0) + 1
        return list(groups.items())

    def released_on_finish(self, reqs: np.ndarray) -> np.ndarray:
        return np.array([sum(1 for blk in self._blocks_of.get(int(r), ()) if self._ref[blk] == 1) for r in reqs],
                        dtype=np.int64)

    # --- changes -------------------------------------------------------------
    def _take(self, n: int) -> list[int]:
        out = []
        for _ in range(n):
            if self._free_uncached:
                blk = self._free_uncached.pop()
            else:
                blk, _ = self._free_cached.popitem(last=False)
                name = self._name[blk]  # evict what it cached
                holders = self._cached[name]
                del holders[blk]
                if not holders:
                    del self._cached[name]
                self._name[blk] = None
            self._ref[blk] = 1
            out.append(blk)
        self.num_free_blocks -= n
        return out

    def _register(self, req: int, num_tokens: int) -> None:
        """Cache the request's blocks that `num_tokens` tokens fill."""
        blocks = self._blocks_of[req]
        full = min(num_tokens // self.block_size_tokens, len(blocks))
        for b in range(self._registered.get(req, 0), full):
            blk = blocks[b]
            name = self._block_name(req, b)
            self._name[blk] = name
            self._cached.setdefault(name, {})[blk] = None
        self._registered[req] = max(self._registered.get(req, 0), full)

    def admit(self, req: int, hit_tokens: int, num_tokens: int) -> bool:
        hits = self._hits(req, hit_tokens)
        evictable = sum(1 for blk in hits if self._ref[blk] == 0)
        if self._blocks(num_tokens) - len(hits) + evictable > self.num_free_blocks:
            return False
        for blk in hits:  # take the hits first, so the new blocks cannot evict them
            if self._ref[blk] == 0:
                del self._free_cached[blk]
                self.num_free_blocks -= 1
            self._ref[blk] += 1
        self._blocks_of[req] = hits
        self._registered[req] = len(hits)
        self._held[req] = len(hits)
        return self.allocate(req, num_tokens)

    def allocate(self, req: int, num_tokens: int) -> bool:
        blocks = self._blocks_of.setdefault(req, [])
        extra = self._blocks(num_tokens) - len(blocks)
        if extra > self.num_free_blocks:
            return False
        if extra > 0:
            blocks.extend(self._take(extra))
            self._held[req] = len(blocks)
        self._register(req, num_tokens)
        return True

    def allocate_many(self, reqs: np.ndarray, num_tokens: np.ndarray) -> bool:
        extra = np.maximum(self._blocks(num_tokens) - self._held[reqs], 0)
        if int(extra.sum()) > self.num_free_blocks:
            return False
        for r, n in zip(reqs.tolist(), np.asarray(num_tokens).tolist()):
            self.allocate(r, n)
        return True

    def free(self, req: int) -> None:
        for blk in reversed(self._blocks_of.pop(req, [])):
            self._ref[blk] -= 1
            if self._ref[blk] == 0:
                if self._name[blk] is None:
                    self._free_uncached.append(blk)
                else:
                    self._free_cached[blk] = None
                self.num_free_blocks += 1
        self._registered.pop(req, None)
        self._held[req] = 0

    def free_many(self, reqs: np.ndarray) -> None:
        for r in np.asarray(reqs).tolist():
            self.free(r)
