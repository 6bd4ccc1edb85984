"""Sections that a benchmark writes into a shared doc (docs/validation.md) between its own markers,

    <!-- name: written by benchmarks/x.py -->
    ...
    <!-- /name -->

so one benchmark can rewrite its section without touching the others, and validate_vllm.py, which
rewrites the whole doc, keeps them as they are."""
from __future__ import annotations

import re
from pathlib import Path

KEPT_SECTION = re.compile(r"<!-- (?P<name>[a-z-]+): written by .*?<!-- /(?P=name) -->", re.S)
INSERT_BEFORE = "\n## Per scenario\n"  # where a section goes the first time it is written


def kept_sections(doc: Path) -> list[str]:
    """Every marked section of `doc`, as written."""
    text = doc.read_text() if doc.is_file() else ""
    return [m.group(0) + "\n" for m in KEPT_SECTION.finditer(text)]


def write_section(doc: Path, begin: str, end: str, lines: list[str]) -> None:
    """Replace the section between `begin` and `end` in `doc` with `lines` (insert it if absent)."""
    text = doc.read_text()
    block = "\n".join([begin, *lines, end])
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.replace(INSERT_BEFORE, "\n" + block + "\n" + INSERT_BEFORE, 1)
    doc.write_text(text)
