"""Facet Atlas dashboard: `streamlit run dashboard/app.py [-- --store DIR]`.

This file is the router (st.navigation) and the frame around every page. It never imports
torch: reruns import the precompute package lazily, in a worker thread.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402

from dashboard import ui  # noqa: E402

st.set_page_config(page_title="Facet Atlas", page_icon=":material/biotech:", layout="wide")

VIEWS = Path(__file__).resolve().parent / "views"
pages = [
    st.Page(VIEWS / "atlas.py", title="Atlas", icon=":material/grid_view:", url_path="atlas", default=True),
    st.Page(VIEWS / "neuron.py", title="Neuron", icon=":material/neurology:", url_path="neuron"),
    st.Page(VIEWS / "sql_console.py", title="SQL", icon=":material/database:", url_path="sql"),
    st.Page(VIEWS / "layers.py", title="Layers", icon=":material/bar_chart:", url_path="layers"),
    st.Page(VIEWS / "lookup.py", title="Lookup", icon=":material/image_search:", url_path="lookup"),
    st.Page(VIEWS / "rerun.py", title="Rerun", icon=":material/replay:", url_path="rerun"),
]
page = st.navigation(pages)
ui.open_store()
ui.sidebar()
page.run()
