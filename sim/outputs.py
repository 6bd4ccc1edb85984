"""Where results go: one checked path per output file, and one DataFrame writer by suffix.

`check_output_path` runs before any simulation, so a bad `--out` costs nothing: the suffix
must be one the caller writes, the folder must exist and be writable, and an existing file
is overwritten only when asked (`--force`). A symbolic link is never written through: its
target is somewhere the user did not name.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .configio import ConfigError, short_path

if TYPE_CHECKING:
    import pandas as pd


def check_output_path(path: str, allowed: tuple[str, ...], force: bool = False, flag: str = "--out") -> Path:
    """The output `path` as a Path, or a ConfigError naming `flag` and what is wrong with it."""
    out = Path(path)
    shown = short_path(path)
    if out.suffix not in allowed:
        raise ConfigError(f"{flag}: got {shown}; allowed: a path ending in {', '.join(allowed)}")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        problem = ("is a symbolic link; name the file itself" if out.is_symlink()
                   else "is a folder; name a file in it" if out.is_dir()
                   else "exists; pass --force to overwrite it" if out.exists() and not force
                   else f"is in folder {short_path(parent)}, which does not exist" if not parent.is_dir()
                   else f"is in folder {short_path(parent)}, which is not writable" if not os.access(parent, os.W_OK)
                   else None)
    except OSError as exc:  # e.g. a name too long for the file system
        problem = f"cannot be used: {exc.strerror}"
    except ValueError:  # a NUL byte in the path
        problem = "is not a usable file name"
    if problem is not None:
        raise ConfigError(f"{flag}: {shown} {problem}")
    return out


def write_output(out: Path, frame: pd.DataFrame | None = None, document: dict | None = None,
                 flag: str = "--out", indent: int | None = 2) -> None:
    """Write `frame` as .csv or .parquet, or `document` as .json (`indent` None: one line, as
    `vllm bench serve` writes its results); OSError becomes a ConfigError."""
    try:
        if out.suffix == ".json":
            out.write_text(json.dumps(document, indent=indent))
        elif out.suffix == ".parquet":
            try:
                frame.to_parquet(out, index=False)
            except ImportError:
                raise ConfigError(f"{flag}: writing .parquet needs pyarrow (pip install 'servesim[parquet]'); "
                                  "or use a .csv path") from None
        elif out.suffix == ".csv":
            frame.to_csv(out, index=False)
        else:
            raise ConfigError(f"{flag}: cannot write {out.suffix!r} files")
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot write {short_path(out)}: {exc.strerror}") from None
