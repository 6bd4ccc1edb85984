"""The command line the GPU lease scripts share: `measure` (on the GPU: --model, --repeats, --out) and
`compare` (anywhere: the CSV a measure wrote, --out for the comparison), each with its own extras."""
from __future__ import annotations

import argparse
import csv
from typing import Callable


def measure_compare_main(doc: str, measure: Callable, compare: Callable, *, repeats: int = 30,
                         measure_args: Callable = lambda p: None, compare_args: Callable = lambda p: None,
                         argv=None) -> int:
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="on a GPU: time the kernels, write a CSV")
    m.add_argument("--model", default="llama-3.1-8b", help="catalog model (default llama-3.1-8b)")
    m.add_argument("--repeats", type=int, default=repeats, help=f"timed samples, median kept (default {repeats})")
    m.add_argument("--out", required=True, help="CSV to write")
    measure_args(m)
    c = sub.add_parser("compare", help="anywhere: the measured CSV beside what servesim prices")
    c.add_argument("csv", help="what `measure` wrote")
    c.add_argument("--out", help="CSV of the comparison (default: print only)")
    compare_args(c)
    args = p.parse_args(argv)
    return measure(args) if args.cmd == "measure" else compare(args)


def write_rows(path: str, rows: list[dict]) -> None:
    """The measured rows as a CSV, columns in the first row's order (every measure's output)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def no_cuda() -> bool:
    """True (and one line on stderr) when there is no CUDA device: a measure then exits 2, not with a traceback."""
    import sys

    import torch

    if torch.cuda.is_available():
        return False
    print("measure: no CUDA device (run it on a GPU machine; `compare` runs anywhere)", file=sys.stderr)
    return True
