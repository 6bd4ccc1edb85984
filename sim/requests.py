"""The request table: one row per request, as parallel arrays. It is both the simulator's
per-request state (tokens generated so far) and, at the end, the flat result records."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .workload import Workload

if TYPE_CHECKING:
    import pandas as pd


class RequestTable:
    def __init__(self, workload: Workload):
        n = len(workload)
        self.arrival_s = workload.arrival_s.astype(np.float64).copy()
        self.prompt_tokens = workload.prompt_tokens.astype(np.int64)
        self.output_tokens = workload.output_tokens.astype(np.int64)
        self.priority = workload.priority.astype(np.int64)
        self.priority_names = dict(workload.priority_names)
        self.generated = np.zeros(n, dtype=np.int64)  # tokens emitted so far (written back on leaving a batch)
        self.scheduled_s = np.full(n, np.nan)  # first time any of its tokens was computed
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.prefix_hit_tokens = np.zeros(n, dtype=np.int64)  # prompt tokens found in the prefix cache at first admission
        self.last_token_s = np.full(n, np.nan)  # set on preemption: when its last token came out
        self.replica = np.full(n, -1, dtype=np.int64)
        self.failed = np.zeros(n, dtype=bool)  # refused on arrival (longer than max_model_len), as vLLM does

    def __len__(self) -> int:
        return len(self.arrival_s)

    def to_frame(self) -> "pd.DataFrame":
        """Flat records (seconds from simulation start; NaN where the event never happened)."""
        import pandas as pd  # only here: a run that never asks for a frame never imports pandas

        names = np.array([self.priority_names.get(int(p), str(p)) for p in range(int(self.priority.max(initial=0)) + 1)],
                         dtype=object)
        return pd.DataFrame({
            "request_id": np.arange(len(self), dtype=np.int64),
            "arrival_s": self.arrival_s,
            "scheduled_s": self.scheduled_s,
            "first_token_s": self.first_token_s,
            "finish_s": self.finish_s,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "generated_tokens": self.generated,
            "priority": self.priority,
            "priority_class": names[self.priority] if len(self) else np.array([], dtype=object),
            "replica": self.replica,
            "preemptions": self.preemptions,
            "failed": self.failed,
            "prefix_hit_tokens": self.prefix_hit_tokens,
        })
