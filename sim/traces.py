"""Request traces people have, read into arrival times and token counts (`load_trace`).

The format is told by the file's suffix and its fields:

    .csv / .parquet  a table with one of these column sets (other columns are ignored):
                       timestamp, prompt_tokens, output_tokens          servesim's own; seconds
                       TIMESTAMP, ContextTokens, GeneratedTokens        Azure LLM inference trace; datetimes
                       Timestamp, Request tokens, Response tokens       BurstGPT; seconds
                       timestamp, input_length, output_length           Mooncake's columns; milliseconds
    .jsonl           one JSON object a line, either
                       {"timestamp": ms, "input_length", "output_length", "hash_ids": [...]}    Mooncake
                       {"created": unix s, "usage": {"prompt_tokens", "completion_tokens"}}    OpenAI request logs
    .json            a `vllm bench serve --save-result --save-detailed` file: each successful
                     request's input_lens / output_lens sent at its start_times

Times become seconds from the first arrival, rows are sorted by time (stable). A prompt below 1
token is an error naming the line and field; an output of 0 tokens (real traces have them:
cancelled or failed requests) is replayed as 1 token and counted in the notes. Mooncake's
`hash_ids` (one id per 512-token block of the prompt, equal ids = shared prefix) are kept in
`Trace.hash_ids` for prefix caching; nothing else reads them. Errors never echo the file's text
beyond a short value.
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .configio import ConfigError, is_file, short_repr

if TYPE_CHECKING:
    import pandas as pd

# pandas is imported inside the readers that parse with it: a run without a trace never loads it.

MAX_TOKENS = 10_000_000  # as sim/workload.py: one prompt or output
MAX_ABS_TIME_S = 366 * 86_400.0 * 100
MAX_ROWS = 100_000_000
MOONCAKE_BLOCK_TOKENS = 512  # Mooncake's traces hash each 512-token block of a prompt

TRACE_COLUMNS = ("timestamp", "prompt_tokens", "output_tokens")  # timestamp: float seconds
AZURE_TRACE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")  # TIMESTAMP: datetime string
BURSTGPT_COLUMNS = ("Timestamp", "Request tokens", "Response tokens")  # seconds from the trace start
MOONCAKE_COLUMNS = ("timestamp", "input_length", "output_length")  # timestamp: milliseconds
# (columns, how the time column reads: "s" seconds, "ms" milliseconds, "datetime")
TABLE_FORMATS = ((MOONCAKE_COLUMNS, "ms"), (TRACE_COLUMNS, "s"), (AZURE_TRACE_COLUMNS, "datetime"),
                 (BURSTGPT_COLUMNS, "s"))
SUFFIXES = (".csv", ".parquet", ".jsonl", ".json")


@dataclass
class Trace:
    """A trace's requests sorted by arrival: seconds from the first arrival, token counts, notes."""

    arrival_s: np.ndarray  # float64
    prompt_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    notes: list[str] = field(default_factory=list)
    hash_ids: list[list[int]] | None = None  # Mooncake: per request, its prompt's block hashes
    hash_block_tokens: int | None = None  # tokens per hash id


def _error(file: pathlib.Path, msg: str) -> ConfigError:
    return ConfigError(f"workload.arrival.path: {file}: {msg}")


def _accepted() -> str:
    return ("accepted column sets: " + " or ".join(str(list(c)) for c, _ in TABLE_FORMATS[1:])
            + f" or {list(MOONCAKE_COLUMNS)} (ms); or .jsonl (Mooncake, OpenAI request logs) or a vLLM "
              "bench serve detailed .json")


def _datetimes_s(column: pd.Series) -> np.ndarray:
    """Seconds since the earliest of datetime strings; zone-aware stamps are compared in UTC
    (a trace mixing offsets, or naive and zoned stamps, is read with naive ones as UTC)."""
    import pandas as pd

    try:
        stamps = pd.to_datetime(column.astype(str), format="ISO8601", errors="coerce", utc=True)
    except (ValueError, TypeError, OverflowError):
        return np.full(len(column), np.nan)
    return (stamps - stamps.min()).dt.total_seconds().to_numpy(dtype=float)


def _tokens(raw: list | pd.Series, name: str, file: pathlib.Path, where) -> np.ndarray:
    """Whole token counts; `where(i)` names row i (a line and column, a list index)."""
    import pandas as pd

    values = pd.to_numeric(pd.Series(raw, dtype=object), errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values) | (values != np.floor(values)) | (np.abs(values) > MAX_TOKENS))
    if bad.size:
        i = int(bad[0])
        value = raw.iloc[i] if isinstance(raw, pd.Series) else raw[i]
        raise _error(file, f"{where(i, name)}: got {short_repr(value)}; expected a whole number of tokens "
                           f"up to {MAX_TOKENS:,}")
    return values.astype(np.int64)


def _finish(file: pathlib.Path, times: np.ndarray, prompt: np.ndarray, output: np.ndarray,
            names: tuple[str, str, str], where, hash_ids: list | None = None,
            notes: list[str] | None = None) -> Trace:
    """Check times and lengths, clamp zero outputs, sort by time."""
    notes = list(notes or [])
    if len(times) == 0:
        raise _error(file, "has no requests")
    bad = np.flatnonzero(~np.isfinite(times) | (np.abs(times) > MAX_ABS_TIME_S))
    if bad.size:
        i = int(bad[0])
        raise _error(file, f"{where(i, names[0])}: not a usable time; expected seconds (float), milliseconds "
                           "(Mooncake) or a datetime such as 2023-11-16 18:15:46.6805900")
    for values, column, least in ((prompt, names[1], 1), (output, names[2], 0)):
        bad = np.flatnonzero(values < least)
        if bad.size:
            i = int(bad[0])
            raise _error(file, f"{where(i, column)}: got {int(values[i])}; must be >= {least} tokens")
    zero = int(np.count_nonzero(output == 0))
    if zero:
        output = np.maximum(output, 1)
        notes.append(f"{file.name}: {zero} of {len(output)} rows had {names[2]} 0; replayed as 1 token")
    order = np.argsort(times, kind="stable")
    times = times[order]
    ids = [hash_ids[i] for i in order] if hash_ids is not None else None
    return Trace(times - times[0], prompt[order], output[order], notes, ids,
                 MOONCAKE_BLOCK_TOKENS if ids is not None else None)


def _read_table(file: pathlib.Path) -> Trace:
    import pandas as pd

    try:
        if file.suffix == ".parquet":
            try:
                df = pd.read_parquet(file)
            except ImportError:
                raise _error(file, "reading .parquet needs pyarrow (pip install 'servesim[parquet]')") from None
        else:
            df = pd.read_csv(file, encoding="utf-8")
    except ConfigError:
        raise
    except UnicodeDecodeError:
        raise _error(file, f"not UTF-8 text; expected a CSV with a header ({_accepted()})") from None
    except Exception as exc:  # pandas/pyarrow raise many types; say what went wrong without the file's text
        kind = "Parquet" if file.suffix == ".parquet" else "CSV"
        raise _error(file, f"not a readable {kind} ({type(exc).__name__}); {_accepted()}") from None
    for columns, unit in TABLE_FORMATS:
        if set(columns) <= set(df.columns):
            break
    else:
        raise _error(file, f"the header ({len(df.columns)} columns) lacks the required ones; {_accepted()}")
    if len(df) == 0:
        raise _error(file, "has a header but no rows")
    if len(df) > MAX_ROWS:
        raise _error(file, f"has {len(df):,} rows; at most {MAX_ROWS:,}")
    time_col, prompt_col, output_col = columns
    if unit == "datetime":
        times = _datetimes_s(df[time_col])
    else:
        times = pd.to_numeric(df[time_col], errors="coerce").to_numpy(dtype=float)
        if unit == "ms":
            times = times / 1000.0
    row = 2 if file.suffix == ".csv" else 1  # a CSV's first data row is its line 2

    def where(i: int, column: str) -> str:
        return f"{'line' if file.suffix == '.csv' else 'row'} {i + row}, column {column}"

    prompt = _tokens(df[prompt_col], prompt_col, file, where)
    output = _tokens(df[output_col], output_col, file, where)
    hash_ids = None
    if unit == "ms" and "hash_ids" in df.columns:
        hash_ids = [list(map(int, h)) if h is not None else [] for h in df["hash_ids"]]
    return _finish(file, times, prompt, output, columns, where, hash_ids)


def _read_jsonl(file: pathlib.Path) -> Trace:
    import pandas as pd

    times, prompt, output, hashes, lines = [], [], [], [], []
    kind = None
    try:
        handle = file.open("r", encoding="utf-8")
    except OSError as exc:
        raise _error(file, f"cannot read: {exc.strerror}") from None
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                if len(times) >= MAX_ROWS:
                    raise _error(file, f"more than {MAX_ROWS:,} requests")
                try:
                    obj = json.loads(line, parse_constant=lambda c: None)
                except json.JSONDecodeError:
                    raise _error(file, f"line {number}: not a JSON object; expected one request a line") from None
                if not isinstance(obj, dict):
                    raise _error(file, f"line {number}: expected a JSON object, got {type(obj).__name__}")
                if kind is None:
                    kind = ("mooncake" if "input_length" in obj else "openai" if "usage" in obj
                            else None)
                    if kind is None:
                        raise _error(file, f"line {number}: neither a Mooncake record (timestamp, input_length, "
                                           "output_length) nor an OpenAI request log (created, usage)")
                lines.append(number)
                if kind == "mooncake":
                    times.append(obj.get("timestamp"))
                    prompt.append(obj.get("input_length"))
                    output.append(obj.get("output_length"))
                    h = obj.get("hash_ids")
                    hashes.append(h if isinstance(h, list) else [])
                else:
                    usage = obj.get("usage")
                    usage = usage if isinstance(usage, dict) else {}
                    times.append(obj.get("created"))
                    prompt.append(usage.get("prompt_tokens"))
                    output.append(usage.get("completion_tokens"))
        except UnicodeDecodeError:
            raise _error(file, "not UTF-8 text; expected JSON lines") from None
    if kind is None:
        raise _error(file, "has no requests")
    names = (("timestamp", "input_length", "output_length") if kind == "mooncake"
             else ("created", "usage.prompt_tokens", "usage.completion_tokens"))

    def where(i: int, column: str) -> str:
        return f"line {lines[i]}, field {column}"

    t = pd.to_numeric(pd.Series(times, dtype=object), errors="coerce").to_numpy(dtype=float)
    notes = []
    if kind == "mooncake":
        t = t / 1000.0
    else:
        notes.append(f"{file.name}: `created` has 1 s resolution; requests created in the same second arrive together")
    p = _tokens(prompt, names[1], file, where)
    o = _tokens(output, names[2], file, where)
    hash_ids = None
    if kind == "mooncake":
        try:
            hash_ids = [[int(x) for x in h] for h in hashes]
        except (TypeError, ValueError):
            hash_ids = None
            notes.append(f"{file.name}: hash_ids are not all integers; ignored")
    return _finish(file, t, p, o, names, where, hash_ids, notes)


def vllm_result_requests(doc: dict, where_prefix: str, error) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(start_times, input_lens, output_lens, failed) of a `vllm bench serve --save-detailed` result,
    successful requests only (vLLM writes output length 0 for a failed one). `error(msg)` builds the
    exception for a malformed field."""
    import pandas as pd

    start = doc.get("start_times")
    if not all(isinstance(doc.get(k), list) for k in ("start_times", "input_lens", "output_lens")):
        raise error(f"{where_prefix}: expected the lists start_times, input_lens, output_lens of a "
                    "`vllm bench serve --save-result --save-detailed` file")
    n = len(start)
    if not 1 <= n <= MAX_ROWS:
        raise error(f"{where_prefix}start_times: {n} entries; expected 1..{MAX_ROWS:,}")
    arrays = []
    for key in ("start_times", "input_lens", "output_lens"):
        raw = doc[key]
        if len(raw) != n:
            raise error(f"{where_prefix}{key}: {len(raw)} entries, but start_times has {n}")
        a = pd.to_numeric(pd.Series(raw, dtype=object), errors="coerce").to_numpy(dtype=float)
        limit = MAX_ABS_TIME_S if key == "start_times" else MAX_TOKENS
        bad = ~np.isfinite(a) | (np.abs(a) > limit)
        if key != "start_times":
            bad |= (a < 0) | (a != np.floor(a))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = "a time in seconds" if key == "start_times" else f"a token count in 0..{MAX_TOKENS:,}"
            raise error(f"{where_prefix}{key}[{i}]: got {short_repr(raw[i])}; expected {what}")
        arrays.append(a)
    start_a, prompt, output = arrays[0], arrays[1].astype(np.int64), arrays[2].astype(np.int64)
    ok = (output > 0) & (prompt > 0)
    if not ok.any():
        raise error(f"{where_prefix}output_lens: no successful request (every entry is 0)")
    return start_a[ok], prompt[ok], output[ok], int((~ok).sum())


def _read_vllm_json(file: pathlib.Path) -> Trace:
    try:
        doc = json.loads(file.read_bytes().decode("utf-8"), parse_constant=lambda c: None)
    except UnicodeDecodeError:
        raise _error(file, "not UTF-8 JSON") from None
    except json.JSONDecodeError:
        raise _error(file, "not JSON; expected a `vllm bench serve --save-result --save-detailed` file") from None
    except OSError as exc:
        raise _error(file, f"cannot read: {exc.strerror}") from None
    if not isinstance(doc, dict):
        raise _error(file, "expected a JSON object (a vllm bench serve result)")
    start, prompt, output, failed = vllm_result_requests(doc, "", lambda msg: _error(file, msg.lstrip(": ")))
    notes = [f"{file.name}: {failed} failed request(s) of the benchmark left out"] if failed else []

    def where(i: int, column: str) -> str:
        return f"{column}[{i}]"

    return _finish(file, start, prompt, output, ("start_times", "input_lens", "output_lens"), where, None, notes)


def load_trace(file: pathlib.Path) -> Trace:
    """Read the trace `file` (format by suffix and fields; see the module docstring)."""
    file = pathlib.Path(file)
    if not is_file(file):
        raise _error(file, f"no such file; expected a trace ({_accepted()})")
    suffix = file.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(file)
    if suffix == ".json":
        return _read_vllm_json(file)
    if suffix == ".parquet":
        return _read_table(file)
    return _read_table(file)  # .csv and anything else: a CSV with a header


def read_trace(file: pathlib.Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(arrival_s from the first arrival, prompt_tokens, output_tokens, notes), sorted by time."""
    t = load_trace(file)
    return t.arrival_s, t.prompt_tokens, t.output_tokens, t.notes
