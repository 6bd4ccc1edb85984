"""What the UI pages share: loading and checking scenarios, widgets that outlive a page visit,
the page's inputs in its URL, and errors shown under the field that caused them.

No simulation logic lives here: a page builds a scenario dict, `check` turns it into a
`Scenario` with the core's own validation, and app_pages/runs.py runs it as the CLI does.
Numbers and tables are formatted in display.py, charts drawn in charts.py, profiles listed
in profiles.py.
"""
from __future__ import annotations

import base64
import copy
import json
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

import streamlit as st
import yaml

from sim.configio import ConfigError, load_yaml
from sim.scenario import Scenario, read_scenario_file, scenario_from_dict, scenario_to_yaml, shipped_scenarios

UI_MAX_REQUESTS = 2000  # default request count in the UI: a run takes well under a second


# --- scenarios ---------------------------------------------------------------

def shipped_dir() -> Path:
    return Path(str(resources.files("scenarios")))


def load_shipped(name: str) -> dict:
    """The raw mapping of a shipped scenario (a fresh copy the page may edit)."""
    return copy.deepcopy(read_scenario_file(shipped_dir() / name))


def parse_uploaded_yaml(data: bytes, filename: str) -> dict:
    # The CLI's loader: UTF-8, one line per error, no duplicate keys, aliases bounded (an uploaded
    # "billion laughs" must not take the server down).
    parsed = load_yaml(data, filename)
    if not isinstance(parsed, dict):
        raise ConfigError(f"{filename}: expected a mapping at the top level (workload:, model:, ...)")
    return parsed


def preflight(scenario: Scenario) -> tuple[Any, str]:
    """The core's load-time checks that need the catalog numbers (quantization support,
    memory fit, profile match), run without simulating. Returns the memory plan and the
    cost model the run will use ("auto: profile NAME …", "roofline", …)."""
    from sim.cost_select import select_cost_model
    from sim.simulation import build_memory

    choice = select_cost_model(scenario)
    return build_memory(scenario, choice.num_kv_blocks), choice.label or choice.name


def check(data: dict, base_dir: str | None) -> tuple[Scenario, Any, str]:
    """(Scenario, memory plan, cost model label) for a scenario mapping; ConfigError names the field on failure."""
    scenario = scenario_from_dict(data, base_dir=Path(base_dir) if base_dir else None)
    return scenario, *preflight(scenario)


def scenario_yaml(scenario: Scenario) -> str:
    return scenario_to_yaml(scenario)


def yaml_to_dict(text: str) -> dict:
    return yaml.safe_load(text)


def scenario_from_dict_yaml(text: str, base_dir: str | None) -> Scenario:
    return scenario_from_dict(yaml.safe_load(text), base_dir=Path(base_dir) if base_dir else None)


def shipped_scenario_names() -> list[str]:
    return shipped_scenarios()


def variant_yaml(base: dict, base_dir: str | None, overrides: list[str]) -> str:
    """The YAML of `base` with `--set`-style overrides applied (validated)."""
    return scenario_yaml(scenario_from_dict(base, overrides, base_dir=Path(base_dir) if base_dir else None))


# --- widgets that outlive a visit to another page ----------------------------------

def sticky(widget, label: str, *, key: str, **kw) -> Any:
    """`widget(label, key=key, **kw)`, starting from the user's last value when the page was left.

    Streamlit drops a widget's state when a run does not draw it (another page is showing),
    so without this a form comes back at its defaults. The last values live under the plain
    session key "sticky" and seed the widget only when it is new (its key is absent).
    """
    saved = st.session_state.setdefault("sticky", {})
    if key not in st.session_state and key in saved:
        value = saved[key]
        options = list(kw.get("options", []))
        if widget in (st.selectbox, st.radio):
            if value in options:
                kw["index"] = options.index(value)
        elif widget is st.multiselect:
            kw["default"] = [v for v in value if v in options]
        else:
            kw["value"] = value
    value = widget(label, key=key, **kw)
    saved[key] = value
    return value


# --- the page's inputs in its URL (shareable) ---------------------------------------

def encode_link(obj: Any) -> str:
    """JSON-able data as a short URL-safe token (JSON, zlib, base64url)."""
    raw = zlib.compress(json.dumps(obj, separators=(",", ":")).encode(), 9)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_link(token: str) -> Any:
    """The data of `encode_link`; ValueError for a token that is not one."""
    try:
        return json.loads(zlib.decompress(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))))
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"not a servesim link ({exc})") from None


def set_link(name: str, obj: Any) -> None:
    """Put `obj` in the page's URL as ?name=..., so the address bar always holds what is on screen."""
    token = encode_link(obj)
    if st.query_params.get(name) != token:
        st.query_params[name] = token


def linked(name: str) -> Any | None:
    """The data in the URL's ?name=... when this session opens the page from a link (once), else None."""
    seen = st.session_state.setdefault("link.read", set())
    if name in seen:  # later runs: the URL holds what this session put there
        return None
    seen.add(name)
    token = st.query_params.get(name)
    if token is None:
        return None
    try:
        return decode_link(token)
    except ValueError:
        st.warning(f"The link's `{name}=` part is not a servesim link; starting from the defaults.")
        return None


# --- errors next to the field that caused them --------------------------------

def error_field(message: str) -> str:
    """The field path a ConfigError message starts with ("serving.tensor_parallel: got 3; ...")."""
    head = message.split(":", 1)[0].strip()
    return head.split(" ")[0]


class FieldErrors:
    """Placeholders under input widgets, keyed by the scenario field they edit.

    A page registers a slot right after each widget (`slot(path)`); after building the
    scenario it hands the ConfigError to `show`, which writes it under the widget whose
    path is the longest prefix of the error's field (else under `fallback`).
    """

    def __init__(self) -> None:
        self.slots: dict[str, Any] = {}
        self.fallback: Any = None

    def slot(self, path: str) -> None:
        self.slots[path] = st.empty()

    def general(self) -> None:
        self.fallback = st.empty()

    def where(self, message: str, field: str | None = None) -> str | None:
        """The registered widget path for an error on `field` (default: the path the message starts with)."""
        field = error_field(field or message)
        matches = [p for p in self.slots if field == p or field.startswith(p + ".")]
        return max(matches, key=len) if matches else None

    def show(self, exc: Exception) -> str | None:
        """Write the error next to its field; return that field path (None: shown in the fallback)."""
        message = str(exc)
        path = self.where(message, getattr(exc, "field", None))  # ConfigError carries its dotted path
        target = self.slots[path] if path else (self.fallback or st.empty())
        target.error(message, icon=":material/error:")
        return path
