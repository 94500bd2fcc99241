"""Pieces shared by the pages: the store, the chosen run, links, query-param state, images."""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st
from PIL import Image

from dashboard import data
from dashboard.config import store_dir
from dashboard.images import crop, outline, upscale
from dashboard.sql import QueryRejected
from precompute.core.fields import ReceptiveField, layer_field

VIEWS = Path(__file__).resolve().parent / "views"
PAGE_FILES = {name: VIEWS / f"{name}.py" for name in ("atlas", "neuron", "sql_console", "layers", "rerun", "lookup")}
CANVAS = ("receptive field", "full image")


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


def field_of(layers: pd.DataFrame, layer: str) -> tuple[ReceptiveField | None, tuple[int, int] | None]:
    """A layer's receptive field (None: fc, the whole image, or a store without fields) and its central
    output position, where conv facets are optimized."""
    row = layers.set_index("layer").loc[layer]
    return layer_field(row["rf_size"], row["rf_stride"], row["rf_offset"], row["rf_method"], row["shape"])


@dataclass
class Canvas:
    """How a page shows a conv layer's images: receptive-field crops (`cropped`) or full canvases with the
    field outlined; images of fc layers (no field) as they are."""
    field: ReceptiveField | None
    middle: tuple[int, int] | None    # the central output position, where conv facets are optimized
    cropped: bool
    input_size: int                   # pixels across the network's input

    def facet(self, png: bytes, size: int) -> bytes:
        """A facet or init image: the receptive field of the central position, or the outlined canvas."""
        if self.field is None:
            return png
        if self.cropped:
            return crop(png, self.field, *self.middle)
        return outline(png, self.field, *self.middle, input_size=self.input_size, size=size)

    def exemplars(self, rows: pd.DataFrame, size: int = 68) -> list[bytes]:
        """Exemplar thumbnails (rows of data.exemplars): their stored crops around where the unit fired most,
        or the thumbnails with that field outlined."""
        if self.field is None or rows["pos_y"].isna().any():
            return list(rows["thumb_png"])
        if self.cropped and rows["crop_png"].notna().all():
            return list(rows["crop_png"])
        return [outline(png, self.field, int(y), int(x), input_size=self.input_size, size=size)
                for png, y, x in zip(rows["thumb_png"], rows["pos_y"], rows["pos_x"])]


def canvas(layers: pd.DataFrame, layer: str, full_size_png: bytes, container=st) -> Canvas:
    """The Canvas of `layer`, with the crop / full-image control where the layer has a receptive field
    (`full_size_png`: any of its full-size facet images, for the input's size)."""
    field, middle = field_of(layers, layer)
    if field is None:
        return Canvas(None, None, False, 0)
    return Canvas(field, middle, show_crops(field, container), Image.open(io.BytesIO(full_size_png)).width)


def show_crops(field: ReceptiveField, container=st) -> bool:
    """Whether conv images show as receptive-field crops (the default) or as full canvases: a control,
    kept in the URL as ?canvas=full so a shared link opens the same way."""
    chosen = container.segmented_control(
        "Show", CANVAS, default=CANVAS[1] if param("canvas") == "full" else CANVAS[0], key="canvas_pick",
        help=f"A unit of this layer sees {field.size[0]} x {field.size[1]} input pixels. Receptive field: only "
             "those (facets: around the central position they were optimized at; exemplars: around where the "
             "unit fired most). Full image: the whole canvas, the receptive field outlined.")
    set_params(canvas="full" if chosen == CANVAS[1] else None)
    return chosen != CANVAS[1]


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
