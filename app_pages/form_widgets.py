"""The scenario form's widgets and their state: one widget per scenario field, keyed by the field's
dotted path in the current form generation and starting from the user's last value after a
visit to another page; and the conversions that read numbers and paths out of a raw scenario
mapping (not validated yet, so anything may be there).
"""
from __future__ import annotations

import math
from typing import Any

import streamlit as st

from app_pages import common as c

# Session state of the form (a plain key, so it outlives a visit to another page):
#   "form": {"n": generation, "values": {field path: last value}, "start": {field path: editor start data}}
# Widget keys carry the generation ("f3.serving.replicas"). Loading another file starts a new
# generation (scenario_source.py): new keys are new widgets in the browser too, so none keeps the
# previous file's value (deleting a key from st.session_state resets the server side only).


def form_state() -> dict:
    return st.session_state.setdefault("form", {"n": 0, "values": {}, "start": {}})


def k(path: str) -> str:
    """The widget key of a scenario field in the current form generation."""
    return f"f{form_state()['n']}.{path}"


def field_of(key: str) -> str:
    """The scenario field a form widget key edits ("f3.serving.replicas" -> "serving.replicas")."""
    return key.split(".", 1)[1]


def start_value(path: str, default: Any) -> Any:
    """The value a widget starts from: the user's last value for `path` when the widget is new
    on this visit (the page was left and Streamlit dropped the widget), else `default`."""
    values = form_state()["values"]
    return values[path] if k(path) not in st.session_state and path in values else default


def keep(path: str, value: Any) -> Any:
    form_state()["values"][path] = value
    return value


def as_number(raw: Any, cast: type) -> int | float | None:
    """`raw` as an int or float if it is one (an int field takes only whole numbers), else None."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        return None
    if cast is int:
        return int(raw) if float(raw).is_integer() else None
    return float(raw)


def number_at(d: Any, name: str) -> float | None:
    """d[name] if `d` is a mapping holding a number there, else None."""
    return as_number(d.get(name), float) if isinstance(d, dict) else None


def get_path(d: dict, path: str, default: Any = None) -> Any:
    node: Any = d
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def select(label: str, options: list, default: Any, path: str, fe: c.FieldErrors, fmt=None, slot: bool = True,
           **kw) -> Any:
    if default is not None and default not in options:
        options = [default] + list(options)  # keep the file's value, so the core names what is wrong with it
    start = start_value(path, default)
    start = start if start in options else default
    index = options.index(start) if start in options else 0
    value = st.selectbox(label, options, index=index, key=k(path), format_func=fmt or str, **kw)
    if slot:
        fe.slot(path)
    return keep(path, value)


def number(label: str, raw: Any, path: str, fe: c.FieldErrors, cast: type = float, slot: bool = True,
           **kw) -> Any:
    """A number input for `path` starting from the file's `raw` value.

    No min/max bounds: a bound makes Streamlit refuse the file's value with a traceback, or
    keep the previous value while showing the typed one. Any number goes to the core, whose
    validation names what is wrong under the field. A value that is not a number of the right
    kind shows as empty and passes through unchanged, so the core names it too.
    """
    value = as_number(raw, cast)
    if cast is int and "step" in kw:
        kw["step"] = int(kw["step"])
    got = st.number_input(label, value=start_value(path, value), key=k(path), **kw)
    if slot:
        fe.slot(path)
    keep(path, got)
    if got is None and raw is not None and value is None:
        return raw
    return got


def checkbox(label: str, default: bool, path: str, **kw) -> bool:
    return keep(path, st.checkbox(label, value=start_value(path, default), key=k(path), **kw))
