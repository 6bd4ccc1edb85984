"""The running batch of one replica, as parallel arrays (one slot per running sequence).

Slots are kept in admission order (newest last), so "preempt the newest" is the last
slot. State that changes every step (computed tokens, tokens known) lives here in
arrays so the engine can advance many decode steps with a few numpy operations.

Progress follows vLLM: `num_tokens` = prompt + tokens generated so far, `computed` =
tokens whose KV is cached. A step computes `chunk` tokens; when `computed` reaches
`num_tokens` the step samples the next token. Decode is the case num_tokens - computed == 1.

The small-batch paths (sim/engine_small.py, the continuous scheduler's list path) read and write the
slots as plain lists (`rows`, `set_rows`, `set_chunk`, `add`): while they do, the lists
are the batch (`_lists`) and the arrays wait (`_stale`). Reading a field as an array (`batch.req`,
`view`, ...) first writes the lists into the arrays and drops them, since the caller may write there.
"""
from __future__ import annotations

import numpy as np

_FIELDS = ("req", "prompt", "output", "computed", "num_tokens", "level", "chunk")
_PROGRESS = slice(_FIELDS.index("computed"), _FIELDS.index("num_tokens") + 1)  # adjacent rows: one assignment


def _field(row: int):
    def get(self) -> np.ndarray:
        if self._lists is not None:
            self._arrays()
        return self._rows[row]
    return property(get, doc=f"the {_FIELDS[row]} of each slot, as an array (capacity long; the first n hold)")


class RunningBatch:
    req, prompt, output, computed, num_tokens, level, chunk = (_field(i) for i in range(len(_FIELDS)))

    def __init__(self, capacity: int):
        self.n = 0
        self._bind(np.zeros((len(_FIELDS), capacity), dtype=np.int64))
        self._lists: list[list[int]] | None = None  # the running slots' rows as plain lists, while they are the batch
        self._stale = False  # the arrays miss what was written to the lists
        # KV blocks for every slot's known tokens already held, every slot decoding next (sim/engine_small.py
        # takes them for the next decision; the continuous scheduler then skips taking them)
        self.blocks_for_known = False

    def _bind(self, data: np.ndarray) -> None:
        """One 2-D array, a row per field (removing slots moves every field in one operation), and its rows."""
        self._data = data
        self._rows = [data[row] for row in range(len(_FIELDS))]

    def _arrays(self) -> None:
        """Make the arrays the batch: write the lists there (where they were written to) and drop them."""
        if self._stale:
            n = self.n
            if n > self._data.shape[1]:
                self._bind(np.zeros((len(_FIELDS), 2 * n), dtype=np.int64))
            if n:
                self._data[:, :n] = self._lists
            self._stale = False
        self._lists = None

    def arrays(self) -> list[np.ndarray]:
        """The fields as arrays (capacity long; the first n hold), in `rows()` order, to read or write
        directly (the lists are dropped): one call where code uses several fields."""
        if self._lists is not None:
            self._arrays()
        return self._rows

    def __len__(self) -> int:
        return self.n

    def add(self, req: int, prompt: int, output: int, num_tokens: int, level: int, chunk: int,
            computed: int = 0) -> int:
        i = self.n
        lists = self._lists
        if lists is not None:
            for row, value in zip(lists, (req, prompt, output, computed, num_tokens, level, chunk)):
                row.append(value)
            self._stale = True
        else:
            if i == self._data.shape[1]:  # grow (a static batch may be bigger than max_num_seqs)
                self._bind(np.concatenate([self._data, np.zeros_like(self._data)], axis=1))
            r = self._rows
            r[0][i], r[1][i], r[2][i], r[3][i] = req, prompt, output, computed
            r[4][i], r[5][i], r[6][i] = num_tokens, level, chunk
        self.n = i + 1
        return i

    def remove(self, keep: np.ndarray) -> None:
        """Keep only the slots where `keep` (length n) is True, preserving order."""
        self._arrays()
        k = int(np.count_nonzero(keep))
        d = self._data
        d[:, :k] = d[:, :self.n].compress(keep, axis=1)
        self.n = k
        self.blocks_for_known = False

    def forget_rows(self) -> list[np.ndarray]:
        """The arrays are about to be written directly: they become the batch (the lists are dropped), and
        here they are (`arrays`)."""
        self.blocks_for_known = False
        return self.arrays()

    def rows(self) -> list[list[int]]:
        """The running slots' fields as plain lists, in the order req, prompt, output, computed,
        num_tokens, level, chunk (one call for all of them). Read-only: they are the batch's own."""
        if self._lists is None:
            self._lists = self._data[:, :self.n].tolist()
        return self._lists

    def set_chunk(self, chunk: list[int]) -> None:
        """Every running slot's chunk, from a list of length n (which the batch keeps: not to be changed)."""
        if self._lists is None:
            self._rows[6][:self.n] = chunk
        else:
            self._lists[6] = chunk
            self._stale = True

    def set_rows(self, rows: list[list[int]]) -> None:
        """Replace the running slots by these: one list per field, in `rows()` order, all as long (the
        batch keeps the lists)."""
        self._lists, self._stale, self.n = rows, True, len(rows[0])

    def view(self, name: str) -> np.ndarray:
        return getattr(self, name)[:self.n]
