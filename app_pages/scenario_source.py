"""Where the scenario form's mapping comes from: a shipped scenario, an uploaded YAML file or a
shared link. The last action wins; loading another file starts a new form generation."""
from __future__ import annotations

import copy
import hashlib

import streamlit as st

from app_pages import common as c
from app_pages import form_widgets as fw
from sim.configio import ConfigError
from sim.scenario import DEFAULT_SCENARIO

# Session state (a plain key, so it outlives a visit to another page):
#   "source": {"pick": shipped name, "upload_n": uploader generation, "loaded": {"id", "data", "base_dir", "label"}}


def _source_state() -> dict:
    return st.session_state.setdefault("source", {"pick": DEFAULT_SCENARIO, "upload_n": 0, "loaded": None})


def upload_key() -> str:
    return f"source.upload{_source_state()['upload_n']}"


def scenario_source(fe: c.FieldErrors) -> tuple[dict, str | None, str]:
    """(raw mapping, base folder for relative paths, label) of the shipped or uploaded scenario.

    The last action wins: picking a shipped scenario replaces an uploaded one (and clears the
    uploader), uploading replaces the shipped one. What is loaded stays loaded across pages.
    Loading another file resets the form to that file's values.
    """
    src = _source_state()
    names = c.shipped_scenario_names()
    shared = c.linked("s")
    if isinstance(shared, dict) and isinstance(shared.get("d"), dict):  # opened from a shared link
        src["loaded"] = {"id": "link:" + hashlib.sha1(repr(shared).encode()).hexdigest(), "data": shared["d"],
                         "base_dir": str(c.shipped_dir()) if shared.get("shipped") else None,
                         "label": "the scenario in the link"}
    col1, col2 = st.columns(2)
    pick = col1.selectbox("Shipped scenario", names, index=names.index(src["pick"]) if src["pick"] in names else 0,
                          key="source.shipped")
    if pick != src["pick"] or src["loaded"] is None:
        src["pick"] = pick
        if src["loaded"] is not None:
            src["upload_n"] += 1  # a fresh uploader: the shipped pick replaces the uploaded file
        src["loaded"] = {"id": "shipped:" + pick, "data": None, "base_dir": str(c.shipped_dir()), "label": pick}
    key = upload_key()
    on_page = key in st.session_state  # the uploader was drawn in the previous run (not another page's)
    with col2:
        upload = st.file_uploader("…or upload a scenario (YAML)", type=["yaml", "yml"], key=key)
        fe.slot("source")
    # The uploader held a file in the previous run and holds none now: the user removed it. After a
    # visit to another page it starts empty, and the uploaded file stays loaded.
    removed = upload is None and on_page and src.get("uploader_had_file", False)
    src["uploader_had_file"] = upload is not None
    loaded = src["loaded"]
    if upload is not None:
        raw = upload.getvalue()
        source_id = "upload:" + hashlib.sha1(raw).hexdigest()
        if source_id != loaded["id"]:
            try:
                data = c.parse_uploaded_yaml(raw, upload.name)
                loaded = {"id": source_id, "data": data, "base_dir": None, "label": upload.name}
            except ConfigError as exc:
                fe.slots["source"].error(f"{exc} — showing {loaded['label']} instead", icon=":material/error:")
    elif loaded["id"].startswith("upload:"):
        if removed:
            loaded = {"id": "shipped:" + pick, "data": None, "base_dir": str(c.shipped_dir()), "label": pick}
        else:
            col2.caption(f"Using the uploaded **{loaded['label']}**.")
    if loaded["id"] != (fw.form_state().get("source_id")):
        form = fw.form_state()
        st.session_state["form"] = {"n": form["n"] + 1, "values": {}, "start": {}, "source_id": loaded["id"]}
    src["loaded"] = loaded
    data = loaded["data"] if loaded["data"] is not None else c.load_shipped(pick)
    return copy.deepcopy(data), loaded["base_dir"], loaded["label"]
