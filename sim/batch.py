"""The running batch of one replica, as parallel arrays (one slot per running sequence).

Slots are kept in admission order (newest last), so "preempt the newest" is the last
slot. State that changes every step (computed tokens, tokens known) lives here in
arrays so the engine can advance many decode steps with a few numpy operations.

Progress follows vLLM: `num_tokens` = prompt + tokens generated so far, `computed` =
tokens whose KV is cached. A step computes `chunk` tokens; when `computed` reaches
`num_tokens` the step samples the next token. Decode is the case num_tokens - computed == 1.

The small-batch paths (sim/engine_small.py, the continuous scheduler's list path) read the slots as
plain lists (`rows`). The small step hands its lists back with the arrays (`set_rows`, `set_progress`):
they are kept (`_lists`) for the next decision's reads while `add` and `set_chunk` keep both alike, and
dropped by `remove` and by code that writes the arrays directly (`forget_rows`).
"""
from __future__ import annotations

import numpy as np

_FIELDS = ("req", "prompt", "output", "computed", "num_tokens", "level", "chunk")
_PROGRESS = slice(_FIELDS.index("computed"), _FIELDS.index("num_tokens") + 1)  # adjacent rows: one assignment


class RunningBatch:
    def __init__(self, capacity: int):
        self.n = 0
        self._bind(np.zeros((len(_FIELDS), capacity), dtype=np.int64))

    def _bind(self, data: np.ndarray) -> None:
        """One 2-D array, a row per field: removing slots moves every field in one operation."""
        self._data = data
        self._lists = None  # the running slots' rows as plain lists, while they match the arrays
        # KV blocks for every slot's known tokens already held, every slot decoding next (sim/engine_small.py
        # takes them for the next decision; the continuous scheduler then skips taking them)
        self.blocks_for_known = False
        for row, name in enumerate(_FIELDS):
            setattr(self, name, data[row])

    def __len__(self) -> int:
        return self.n

    def add(self, req: int, prompt: int, output: int, num_tokens: int, level: int, chunk: int,
            computed: int = 0) -> int:
        i = self.n
        if i == len(self.req):  # grow (a static batch may be bigger than max_num_seqs)
            self._bind(np.concatenate([self._data, np.zeros_like(self._data)], axis=1))
        self.req[i], self.prompt[i], self.output[i] = req, prompt, output
        self.computed[i], self.num_tokens[i], self.level[i], self.chunk[i] = computed, num_tokens, level, chunk
        self.n = i + 1
        lists = self._lists
        if lists is not None:
            for row, value in zip(lists, (req, prompt, output, computed, num_tokens, level, chunk)):
                row.append(value)
        return i

    def remove(self, keep: np.ndarray) -> None:
        """Keep only the slots where `keep` (length n) is True, preserving order."""
        k = int(np.count_nonzero(keep))
        d = self._data
        d[:, :k] = d[:, :self.n].compress(keep, axis=1)
        self.n = k
        self._lists, self.blocks_for_known = None, False

    def forget_rows(self) -> None:
        """The arrays are about to be written directly: the plain-list rows no longer hold."""
        self._lists, self.blocks_for_known = None, False

    def rows(self) -> list[list[int]]:
        """The running slots' fields as plain lists, in the order req, prompt, output, computed,
        num_tokens, level, chunk (one call for all of them, or the lists the last step handed back).
        Read-only: they may be the batch's own."""
        lists = self._lists
        return self._data[:, :self.n].tolist() if lists is None else lists

    def set_chunk(self, chunk: list[int]) -> None:
        """Every running slot's chunk, from a list of length n (which the batch keeps: not to be changed)."""
        self.chunk[:self.n] = chunk
        if self._lists is not None:
            self._lists[6] = chunk

    def set_rows(self, rows: list[list[int]]) -> None:
        """Replace the running slots by these: one list per field, in `rows()` order, all as long."""
        k = len(rows[0])
        if k > len(self.req):
            self._bind(np.zeros((len(_FIELDS), 2 * k), dtype=np.int64))
        if k:
            self._data[:, :k] = rows
        self.n = k
        self._lists = rows

    def set_progress(self, rows: list[list[int]]) -> None:
        """The same slots after a step: `rows()` with new `computed` and `num_tokens` lists and a chunk of
        zeros (the batch keeps the lists)."""
        self._data[_PROGRESS, :self.n] = rows[3:5]
        self.chunk[:self.n] = 0
        self._lists = rows

    def view(self, name: str) -> np.ndarray:
        return getattr(self, name)[:self.n]
