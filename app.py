"""servesim's web UI: `streamlit run app.py` (needs the `ui` extra: pip install 'servesim[ui]').

Four pages, each a thin shell over the same functions the CLI calls:
Scenario (edit and run one scenario), Compare (schedulers and options side by side, load
sweeps), Plan (the capacity question), Calibrate (fit a cost profile on measurements).
The pages live in app_pages/; this file only sets up the navigation.
"""
from pathlib import Path

import streamlit as st

# A local image: a Material-symbol page icon is fetched from fonts.gstatic.com, which an offline machine cannot reach.
ICON = Path(__file__).parent / "app_pages" / "icon.png"
st.set_page_config(page_title="servesim", page_icon=str(ICON), layout="wide")

PAGES = [
    st.Page("app_pages/scenario.py", title="Scenario", icon=":material/play_arrow:", url_path="scenario", default=True),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    st.Page("app_pages/plan.py", title="Plan", icon=":material/calculate:", url_path="plan"),
    st.Page("app_pages/calibrate.py", title="Calibrate", icon=":material/tune:", url_path="calibrate"),
]

st.navigation(PAGES).run()
