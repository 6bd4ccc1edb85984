"""A log-binned histogram of inter-token latencies.

There is one ITL per emitted token after the first (hundreds of millions in a day),
so they are not stored one by one: each step contributes its duration, weighted by
the sequences that emitted a token in it. 200 bins per decade (~1.2 % wide) from
1 us to 1000 s; percentiles are read at bin centres (geometric).
"""
from __future__ import annotations

import numpy as np

EDGES_S = np.logspace(-6, 3, 9 * 200 + 1)
_FLUSH = 1 << 18


class LogHistogram:
    def __init__(self):
        self.counts = np.zeros(len(EDGES_S) + 1, dtype=np.int64)  # [underflow, bins..., overflow]
        self._values: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self._pending = 0
        self._one_values: list[float] = []  # single steps, batched into arrays at flush
        self._one_weights: list[int] = []

    def add(self, values_s: np.ndarray, weights: np.ndarray) -> None:
        self._values.append(np.asarray(values_s, dtype=np.float64))
        self._weights.append(np.asarray(weights, dtype=np.int64))
        self._pending += len(self._values[-1])
        if self._pending >= _FLUSH:
            self.flush()

    def add_one(self, value_s: float, weight: int) -> None:
        self._one_values.append(value_s)
        self._one_weights.append(weight)
        if len(self._one_values) >= _FLUSH:
            self.flush()

    def add_lists(self, values_s: list[float], weights: list[int]) -> None:
        """`add` for plain lists (a few steps): kept with the single steps until the next flush (bin
        counts are sums of integers, so how values are grouped before binning changes nothing)."""
        self._one_values += values_s
        self._one_weights += weights
        if len(self._one_values) >= _FLUSH:
            self.flush()

    def flush(self) -> None:
        if self._one_values:
            self._values.append(np.array(self._one_values))
            self._weights.append(np.array(self._one_weights, dtype=np.int64))
            self._one_values, self._one_weights = [], []
        if not self._values:
            return
        v, w = np.concatenate(self._values), np.concatenate(self._weights)
        self.counts += np.bincount(np.searchsorted(EDGES_S, v, side="right"), weights=w,
                                   minlength=len(self.counts)).astype(np.int64)
        self._values, self._weights, self._pending = [], [], 0

    @property
    def total(self) -> int:
        self.flush()
        return int(self.counts.sum())

    def mean_s(self) -> float:
        self.flush()
        c = self.counts[1:-1]
        centres = np.sqrt(EDGES_S[:-1] * EDGES_S[1:])
        return float((c * centres).sum() / c.sum()) if c.sum() else float("nan")

    def percentile_s(self, q: float) -> float:
        self.flush()
        total = self.counts.sum()
        if total == 0:
            return float("nan")
        idx = int(np.searchsorted(np.cumsum(self.counts), q / 100.0 * total, side="left"))
        idx = min(max(idx, 1), len(EDGES_S) - 1)
        return float(np.sqrt(EDGES_S[idx - 1] * EDGES_S[idx]))
