"""Pieces shared by the pages: the store, the chosen run, links, query-param state, images."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.config import store_dir
from dashboard.images import upscale
from dashboard.sql import QueryRejected

VIEWS = Path(__file__).resolve().parent / "views"
PAGE_FILES = {name: VIEWS / f"{name}.py" for name in ("atlas", "neuron", "sql_console", "layers", "rerun")}


@st.cache_resource(show_spinner="Opening the atlas…")
def _database(folder: str, parts_mtime: float) -> str:
    from precompute.core.store import ensure_database   # no torch: precompute imports lazily
    return str(ensure_database(folder))


def open_store() -> None:
    """Find this script run's database once (the router calls it before every page): looking
    for newer Parquet parts stats every part file, too much to repeat for each query."""
    from precompute.core.store import Store
    folder = store_dir()
    database = _database(str(folder), Store(folder).newest_part_mtime())
    st.session_state["atlas_database"] = data.Database.at(database)


def db() -> data.Database:
    """The atlas.duckdb to query (the store's own, or one consolidated from its Parquet parts)."""
    return st.session_state["atlas_database"]


def require_store() -> None:
    """Stop the page with a clear message when the store folder holds no atlas."""
    if db().version == 0.0:
        st.error(f"No atlas store at `{store_dir()}` (no atlas.duckdb or Parquet parts). Build one with "
                 "`python -m precompute demo`, or point the dashboard at a store with "
                 "`streamlit run dashboard/app.py -- --store DIR` or `ATLAS_STORE=DIR`.")
        st.stop()


def param(name: str, default=None, cast=str):
    """A query parameter, cast, or `default` when missing or malformed."""
    value = st.query_params.get(name)
    if value is None:
        return default
    try:
        return cast(value)
    except (TypeError, ValueError):
        return default


def set_params(**values) -> None:
    """Write page state into the URL so every view is a link (None removes a key)."""
    for key, value in values.items():
        if value is None or value == "":
            if key in st.query_params:
                del st.query_params[key]
        elif st.query_params.get(key) != str(value):
            st.query_params[key] = str(value)


def mfv_runs() -> pd.DataFrame:
    runs = data.runs(db())
    return runs[runs["method"] == "mfv"].reset_index(drop=True)


def choose_run(container=st) -> pd.Series:
    """The MFV run the page shows (from ?run=, else the first), with a picker if there are several."""
    runs = mfv_runs()
    if runs.empty:
        st.warning("This store has no MFV run yet. Build one with `python -m precompute build --method mfv`.")
        st.stop()
    ids = runs["run_id"].tolist()
    wanted = param("run", ids[0])
    index = ids.index(wanted) if wanted in ids else 0
    if len(ids) > 1:
        labels = {r.run_id: f"{r.model} · {r.dataset} · {r.run_id}" for r in runs.itertuples()}
        chosen = container.selectbox("Run", ids, index=index, format_func=labels.get, key="run_pick")
    else:
        chosen = ids[index]
    return runs[runs["run_id"] == chosen].iloc[0]


def neuron_link(layer: str, unit: int, run_id: str | None = None, label: str | None = None, facet=None) -> None:
    params = {"layer": layer, "unit": str(unit)}
    if run_id:
        params["run"] = run_id
    if facet is not None:
        params["facet"] = str(facet)
    st.page_link(PAGE_FILES["neuron"], label=label or f"{layer}/{unit}", query_params=params, icon=":material/neurology:")


def show_image(png: bytes | None, caption: str | None = None, size: int = 112) -> None:
    if png is None:
        st.caption("no image")
    else:
        st.image(upscale(png, size), caption=caption)


def fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def config_of(run: pd.Series) -> dict:
    try:
        return json.loads(run["config_json"])
    except (TypeError, ValueError):
        return {}


def sidebar() -> None:
    from dashboard.access import check_mode
    with st.sidebar:
        if check_mode() == "public":
            st.success("Public atlas · read-only", icon=":material/public:")
        else:
            st.caption(":material/edit: Local mode: reruns add runs to this store")
        st.caption(f"Store: `{store_dir()}`")
        try:
            runs = data.runs(db()) if db().version else pd.DataFrame()
        except QueryRejected as exc:
            st.error(f"Cannot read the store: {exc}")
            return
        if not runs.empty:
            model = runs.iloc[0]
            st.caption(f"Model **{model['model']}** · {len(runs)} runs · "
                       f"weights `{str(model['model_sha256'])[:12]}`")
