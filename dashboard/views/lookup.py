"""Lookup: which neurons and facets does an image drive? Upload one, or pick an image of the store's
dataset by id; per layer, the units it drives most for them, each with the facet it belongs to."""
import pandas as pd
import streamlit as st

from dashboard import data, lookups, ui
from dashboard.access import lookup_blocked
from dashboard.config import store_dir
from dashboard.images import tile
from precompute.core.uploads import EXTENSIONS, FORMATS

SOURCES = ("upload", "dataset image")

st.title("Lookup")
st.caption("Which neurons does an image drive, and which of their facets does it belong to? Units are ranked by "
           "how strong the image is *for the unit*: its activation as a percentile of the unit's exemplar "
           "activations. The facet is the one whose mean fc7 code is nearest the image's.")
ui.require_store()
run = ui.choose_run(st.sidebar)
blocked = lookup_blocked()
if blocked:
    st.info(blocked, icon=":material/lock:")
    st.stop()

asked_id = ui.param("id", None, int)
source = st.segmented_control("Image", SOURCES, default=SOURCES[1] if asked_id is not None else SOURCES[0],
                              key="lookup_source") or SOURCES[0]
result, problem = None, None
if source == SOURCES[0]:
    ui.set_params(id=None)
    upload = st.file_uploader(f"An image ({', '.join(FORMATS)}; up to 1 MB)", type=list(EXTENSIONS), key="lookup_upload")
    if upload is not None:
        with st.spinner("Looking up…"):
            try:
                result = lookups.look_up(str(store_dir()), ui.db().path, run["run_id"],
                                         image=upload.getvalue(), name=upload.name)
            except lookups.LookupRefused as exc:
                problem = str(exc)
else:
    with st.form("by_id"):
        image_id = st.number_input("Image id (the store's `image_id`)", min_value=0, value=asked_id or 0, step=1)
        go = st.form_submit_button("Look up")
    if go or asked_id is not None:
        chosen = int(image_id) if go else asked_id
        ui.set_params(id=chosen)
        with st.spinner("Looking up…"):
            try:
                result = lookups.look_up(str(store_dir()), ui.db().path, run["run_id"], image_id=chosen)
            except lookups.LookupRefused as exc:
                problem = str(exc)

if problem:
    st.error(problem)
if result is None:
    st.stop()


def unit_card(hit, rank_label: str, wide: bool = False) -> None:
    """One unit as the image drives it: where it fired, its nearest facet with that facet's init and
    exemplars, and a link to the neuron page with the facet highlighted."""
    with st.container(border=True):
        ui.neuron_link(hit.layer, hit.unit, run["run_id"], label=f"**{hit.label}**", facet=hit.facet)
        st.caption(f"{rank_label} · **{hit.percentile:.0%}** of its exemplars at or below · "
                   f"{hit.of_strongest:.0%} of its strongest · act {hit.activation:.2f}")
        if hit.crop_png is not None:
            ui.show_image(hit.crop_png, f"where it fired {hit.position}", 84)
        facets = data.facets(ui.db(), run["run_id"], hit.layer, hit.unit)
        chosen = facets[facets["facet"] == hit.facet] if hit.facet is not None else facets.iloc[0:0]
        if chosen.empty:
            st.caption("no facets (a dead or failed neuron)")
            return
        facet = chosen.iloc[0]
        columns = st.columns([1, 1, 3] if wide else 2)
        with columns[0]:
            ui.show_image(facet["image_png"], f"facet {hit.facet}", 84)
        with columns[1]:
            ui.show_image(facet["init_png"], "its init", 84)
        exemplars = data.exemplars(ui.db(), run["run_id"], hit.layer, hit.unit)
        nearest = exemplars[(exemplars["facet"] == hit.facet) & exemplars["thumb_png"].notna()].head(4)
        if len(nearest):
            st.image(tile(list(nearest["thumb_png"]), per_row=4, cell=34, gap=2))


top = st.columns([1, 3])
with top[0]:
    ui.show_image(result.input_png, "as the network sees it", 160)
with top[1]:
    st.subheader(f"Predicted: {result.predicted_label}")
    st.caption(f"p = {result.probability:.2f}")
    if result.class_neuron is not None:
        unit_card(result.class_neuron, "its class neuron", wide=True)
    else:
        st.caption("This run has no class neurons (its logits layer was not built).")

layers = data.layers(ui.db(), run["run_id"])
names = [name for name in layers["layer"] if name in result.layers][::-1]   # deepest first
st.subheader("Units it drives most, per layer")
for name, tab in zip(names, st.tabs(names)):
    with tab:
        hits = result.layers[name]
        if not hits:
            st.caption("No unit of this layer has exemplars in the run.")
            continue
        for col, (rank, hit) in zip(st.columns(len(hits)), enumerate(hits, 1)):
            with col:
                unit_card(hit, f"#{rank}")
table = pd.DataFrame([{"layer": h.layer, "unit": h.unit, "label": h.label, "percentile": h.percentile,
                       "activation": h.activation, "facet": h.facet} for hits in result.layers.values() for h in hits])
with st.expander("All of it as a table"):
    st.dataframe(table, hide_index=True, width="stretch")
