"""Atlas: every neuron of a layer as a card with its facet images; filter, sort, page."""
import math

import pandas as pd
import streamlit as st

from dashboard import data, ui
from dashboard.images import tile

PAGE_SIZE = 24
COLUMNS = 4

st.title("Atlas")
st.caption("Each card is one neuron: its facets (one synthesized image per cluster of the images that "
           "drive it), largest facet first. Open a card for the full picture.")
ui.require_store()
run = ui.choose_run(st.sidebar)
layers = data.layers(ui.db(), run["run_id"])
names = layers["layer"].tolist()
if not names:
    st.info("This run has no layers yet.")
    st.stop()

top = st.columns([1, 2, 2, 2])
default_layer = ui.param("layer", names[-1])
layer = top[0].selectbox("Layer", names, index=names.index(default_layer) if default_layer in names else len(names) - 1,
                         help="conv1 is closest to the pixels; fc8 holds one neuron per class.")
search = top[1].text_input("Search", ui.param("q", ""), placeholder="label, class or unit number",
                           help="Matches the neuron's label, its exemplars' majority class, or its unit number.")
sorts = list(data.SORTS)
sort = top[2].selectbox("Sort by", sorts, index=sorts.index(ui.param("sort", sorts[0])) if ui.param("sort") in sorts else 0)
lo, hi = sorted(max(0.0, min(v, 1.0)) for v in (ui.param("dmin", 0.0, float), ui.param("dmax", 1.0, float)))
div_range = top[3].slider("Facet diversity", 0.0, 1.0, (lo, hi), step=0.05,
                          help="Share of the spread of a neuron's exemplars (fc7 codes) that lies between its facets "
                               "(0: facets alike; random splits give about (k-1)/(n-1); 1: each facet one kind of image).")
include_unscored = st.checkbox("Include neurons without a diversity score (dead units, single-facet neurons)",
                               value=ui.param("all", "1") == "1")

page = max(1, ui.param("page", 1, int))
cards, total = data.neuron_page(ui.db(), run["run_id"], layer, search.strip(), tuple(div_range),
                                include_unscored, sort, PAGE_SIZE, (page - 1) * PAGE_SIZE)
pages = max(1, math.ceil(total / PAGE_SIZE))
if page > pages:
    page = pages
    cards, total = data.neuron_page(ui.db(), run["run_id"], layer, search.strip(), tuple(div_range),
                                    include_unscored, sort, PAGE_SIZE, (page - 1) * PAGE_SIZE)

nav = st.columns([3, 1])
nav[0].markdown(f"**{total}** of {int(layers.set_index('layer').loc[layer, 'n_units'])} neurons in `{layer}` match")
page = nav[1].number_input(f"Page (of {pages})", 1, pages, page, key=f"page_{layer}_{search}_{sort}_{div_range}")
ui.set_params(run=run["run_id"], layer=layer, q=search.strip() or None, sort=None if sort == sorts[0] else sort,
              dmin=None if div_range[0] == 0.0 else div_range[0], dmax=None if div_range[1] == 1.0 else div_range[1],
              all=None if include_unscored else "0", page=None if page == 1 else page)

if cards.empty:
    st.info("No neurons match. Widen the diversity range or clear the search.")
    st.stop()

images = data.facet_images(ui.db(), run["run_id"], layer, tuple(int(u) for u in cards["unit"]))
by_unit = {unit: group for unit, group in images.groupby("unit")}
view = ui.canvas(layers, layer, images.iloc[0]["image_png"]) if len(images) else None
for start in range(0, len(cards), COLUMNS):
    for col, card in zip(st.columns(COLUMNS), cards.iloc[start:start + COLUMNS].itertuples()):
        with col.container(border=True):
            ui.neuron_link(layer, card.unit, run["run_id"], label=f"**{card.label}** · unit {card.unit}")
            if card.status != "ok":
                st.caption(f"{card.status}: {card.reason}")
                continue
            facet_pngs = by_unit.get(card.unit)
            if facet_pngs is not None:
                st.image(tile([view.facet(png, 96) for png in facet_pngs["image_png"][:10]], per_row=5, cell=48))
            st.caption(f"diversity {ui.fmt(card.facet_diversity)} (null {ui.fmt(card.diversity_null)}) · "
                       f"k={card.k} · best act {ui.fmt(card.best_act_final, 1)}"
                       + (f" · explains {card.explanation:.0%}" if pd.notna(card.explanation) else "")
                       + (f" · facet score {card.facet_score:.0%}" if pd.notna(card.facet_score) else "")
                       + (f" · mostly {card.top_class} ({card.top_class_share:.0%})" if card.top_class else ""))
