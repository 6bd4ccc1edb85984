"""The KV-cliff rows of docs/validation_gpu.md: why each one misses, from what the measurement shows.

A cliff row is KV-bound in the prediction or queueing in the measurement (mean TTFT above 2 s). Its
TTFT is requests waiting for room, so whether the measured server held as many requests in flight
as servesim decides the row. The CSV records TTFT and TPOT only, but in a closed loop with no think
time Little's law turns them into the mean number of requests between their first and last token
(`calibration.silicon.in_decode`); the same formula on the prediction compares like with like.

- Measured far below predicted (under half) while requests queue: the measured server, or something
  in front of it, let only that many requests in (the 2025-12 gpt-oss-120b H100 c512 rows all sit at
  96-106 of 512, at TP2, TP4 and TP8 alike, so not their KV cache).
- Predicted KV-bound with fewer in flight than measured: vLLM's KV cache held more than servesim's
  block estimate (the CSV has no KV-cache dtype; an fp8 cache holds 2x the tokens of bf16).
- The same count on both sides: the capacity agrees as far as the row can tell; the TTFT gap is the
  cliff's sensitivity (a few % of blocks move TTFT several-fold).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from calibration.silicon import in_decode

QUEUEING_TTFT_MS = 2000.0  # a measured TTFT above this is requests queueing (for KV blocks), not prefill
FEWER_SHARE = 0.5  # measured in flight below this share of the predicted: a limit the CSV does not record
SAME_BAND = 0.2  # measured within +-20 % of predicted in flight: the same occupancy
FP8_KV_RATIO = 1.5  # vLLM held at least this many times servesim's sequences: about an fp8 KV cache's 2x


def is_cliff(res: pd.DataFrame) -> pd.Series:
    """Rows KV-bound in the prediction or queueing in the measurement."""
    return res["kv_bound"] | (res["ttft_ms"] > QUEUEING_TTFT_MS)


def in_flight(r) -> tuple[float, float]:
    """(measured, predicted) mean requests between first and last token of one result row."""
    return (in_decode(r.concurrency, r.osl, r.ttft_ms, r.tpot_ms),
            in_decode(r.concurrency, r.osl, r.pred_ttft_ms, r.pred_tpot_ms))


def cliff_cause(r) -> str | None:
    """Why a cliff row misses (None for a row off the cliff)."""
    queued = r.ttft_ms > QUEUEING_TTFT_MS
    if not (r.kv_bound or queued):
        return None
    m, p = in_flight(r)
    q = m / p if p > 0 else np.nan
    c = r.concurrency
    counts = f"{m:.0f} of {c} requests between first and last token measured (Little's law), {p:.0f} predicted"
    if queued and q < FEWER_SHARE:
        return (f"in-flight limit, not the KV cache: {counts}; the measured server admitted far fewer requests than "
                "its clients sent, by a limit the CSV does not record (a connection pool or --max-num-seqs); "
                "servesim admits every request its KV cache holds")
    # Long outputs keep both counts near the concurrency whatever the capacity (a preempted request
    # is between its first and last token too): then only the TTFT tells which side holds more.
    saturated = min(m, p) >= (1 - SAME_BAND) * c
    more = (q > 1 + SAME_BAND) or (saturated and r.pred_ttft_ms > (1 + SAME_BAND) * r.ttft_ms)
    fewer = (q < 1 - SAME_BAND) or (saturated and r.pred_ttft_ms < (1 - SAME_BAND) * r.ttft_ms)
    if r.kv_bound and more:
        fp8 = (" - about what an fp8 KV cache (2x the tokens of vLLM's bf16 'auto') gives; the CSV records no "
               "KV-cache dtype" if q >= FP8_KV_RATIO and getattr(r, "kv_dtype", "bf16") != "fp8" else "")
        how = (f"vLLM held {q:.1f}x the sequences servesim's block estimate allows{fp8}" if not saturated else
               "both decode nearly every request (long outputs), but the measured wait before the first token is "
               "shorter: vLLM's KV cache held more than servesim's block estimate")
        return f"KV capacity below vLLM's: {counts}; {how}"
    if r.kv_bound and fewer:
        return (f"KV capacity above vLLM's: {counts}; vLLM held fewer sequences (or waited longer) than servesim's "
                "block estimate allows")
    if r.kv_bound:
        return (f"KV cliff in both with the same occupancy: {counts}; the block count agrees as far as the row "
                "shows, and at a cliff a few % of blocks move TTFT several-fold")
    if q < 1 - SAME_BAND:
        return (f"queueing in the measurement only: {counts}; vLLM admitted fewer sequences than servesim (its KV "
                "capacity or a server limit the CSV does not record)")
    return f"queueing in the measurement only, with the predicted occupancy: {counts}; requests wait for prefill"


def cliff_group(r) -> str:
    """A short name for the cause, to summarise the cliff rows by."""
    why = cliff_cause(r) or ""
    return why.split(":", 1)[0]
