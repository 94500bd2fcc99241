"""Neuron: the paper's figure, interactive. Facets with their inits and nearest exemplars,
the t-SNE map of the exemplars coloured by facet, and the other methods' results."""
import altair as alt
import pandas as pd
import streamlit as st

from dashboard import data, ui
from dashboard.images import data_uri, tile

ui.require_store()
run = ui.choose_run(st.sidebar)
layers = data.layers(ui.db(), run["run_id"])
names = layers["layer"].tolist()
layer = ui.param("layer", names[-1] if names else None)
if layer not in names:
    st.title("Neuron")
    st.error(f"Unknown layer {layer!r}; this run has: {', '.join(names)}.")
    st.stop()
n_units = int(layers.set_index("layer").loc[layer, "n_units"])
unit = ui.param("unit", 0, int)
if not 0 <= unit < n_units:
    st.title("Neuron")
    st.error(f"Unit {unit} is out of range for layer {layer!r}: valid units are 0..{n_units - 1}.")
    st.stop()

cols = st.sidebar.columns(2)
asked = (layer, unit)
layer = cols[0].selectbox("Layer", names, index=names.index(layer))
n_units = int(layers.set_index("layer").loc[layer, "n_units"])
unit = int(cols[1].number_input("Unit", 0, n_units - 1, min(unit, n_units - 1)))
row = data.neuron(ui.db(), run["run_id"], layer, unit)
selected = ui.param("facet", None, int) if (layer, unit) == asked else None   # a highlight belongs to its neuron
ui.set_params(run=run["run_id"], layer=layer, unit=unit, facet=selected)
if row is None:
    st.title(f"{layer}/{unit}")
    st.info("This neuron is not in the store yet (its layer or unit was not built).")
    st.stop()

st.title(f"{row['label']}  ·  {layer}/{unit}")
scores = data.scores(ui.db(), run["run_id"], layer, unit)
own = scores[(scores["method"] != "exemplars") & scores["facet"].isna()]
natural = scores[(scores["method"] == "exemplars") & scores["facet"].isna()]
facet_scores = dict(zip(scores[scores["method"] != "exemplars"]["facet"].dropna().astype(int),
                        scores[scores["method"] != "exemplars"]["score"].dropna()))
told = data.facet_scores(ui.db(), run["run_id"], layer, unit)
told_neuron = {m: g.iloc[0] for m, g in told[told["facet"].isna()].groupby("method")}
per_facet = told[(told["method"] == "mfv") & told["facet"].notna()]
told_facets = dict(zip(per_facet["facet"].astype(int), per_facet["score"]))
meta = st.columns(7)
meta[0].metric("Facets (k)", row["k"])
meta[1].metric("Exemplars", ui.fmt(row["n_exemplars"]))
meta[2].metric("Facet diversity", ui.fmt(row["facet_diversity"]), help="Random-split baseline: "
               f"{ui.fmt(row['diversity_null'])}. Share of the exemplars' spread that lies between facets (0 to 1).")
meta[3].metric("Best activation reached", ui.fmt(row["best_act_final"], 1))
meta[4].metric("Top exemplar activation", ui.fmt(row["max_activation"], 1))
if len(own):
    first = own.iloc[0]
    meta[5].metric("Explanation score", f"{first['score']:.0%}",
                   delta=f"{first['score'] - natural.iloc[0]['score']:+.0%} vs exemplars" if len(natural) else None,
                   delta_color="off",
                   help=f"Share of {first['trials']} trials (a strongly and a weakly driving held-out image, "
                        f"{first['heldout']}) where the image more like these facets under {first['backbone']} "
                        "is the stronger one. 50% is chance." +
                        (f" The neuron's real exemplars score {natural.iloc[0]['score']:.0%}." if len(natural) else ""))
if "mfv" in told_neuron and pd.notna(told_neuron["mfv"]["score"]):
    mine, real = told_neuron["mfv"], told_neuron.get("exemplars")
    meta[6].metric("Facet score", f"{mine['score']:.0%}",
                   delta=f"{mine['score'] - real['score']:+.0%} vs exemplars" if real is not None else None,
                   delta_color="off",
                   help=f"Share of {mine['trials']} trials (two strongly driving held-out images of different facets, "
                        f"{mine['heldout']}) where a facet's image is more like the one of its own facet under "
                        f"{mine['backbone']}. 50% is chance: one picture for every facet scores that."
                        + (f" The exemplar nearest each facet's centre scores {real['score']:.0%}." if real is not None else ""))
if row["top_class"]:
    st.caption(f"Exemplars are mostly **{row['top_class']}** ({row['top_class_share']:.0%}).")
st.page_link(ui.PAGE_FILES["rerun"], label="Rerun this neuron with other settings", icon=":material/replay:",
             query_params={"layer": layer, "unit": str(unit), "run": run["run_id"]})
if row["status"] != "ok":
    st.warning(f"This neuron is **{row['status']}**: {row['reason']}. MFV has no facets for it; "
               "the from-noise results below show what would turn it on.")

facets = data.facets(ui.db(), run["run_id"], layer, unit)
exemplars = data.exemplars(ui.db(), run["run_id"], layer, unit)

if not facets.empty:
    st.subheader("Facets")
    view = ui.canvas(layers, layer, facets.iloc[0]["image_png"])
    field, cropped = view.field, view.cropped
    st.caption("Top: the synthesized facet. Below it: its initialization (the mean of the 15 exemplars "
               "nearest the cluster centre) and the 4 exemplars nearest the centre."
               + (f" A unit of `{layer}` sees {field.size[0]} x {field.size[1]} pixels: "
                  + ("shown is that receptive field, around the central position for facets and inits and around "
                     "where the unit fired most for exemplars." if cropped else "outlined in orange.")
                  if field else ""))
    per_row = 5
    for start in range(0, len(facets), per_row):
        for col, facet in zip(st.columns(per_row), facets.iloc[start:start + per_row].itertuples()):
            with col.container(border=True):
                marker = "▶ " if selected == facet.facet else ""
                ui.show_image(view.facet(facet.image_png, 140), f"{marker}facet {facet.facet} · {facet.size} images", 140)
                ui.show_image(view.facet(facet.init_png, 70), "init (mean image)", 70)
                nearest = exemplars[(exemplars["facet"] == facet.facet) & exemplars["thumb_png"].notna()].head(4)
                if len(nearest):
                    st.image(tile(view.exemplars(nearest), per_row=4, cell=34, gap=2))
                prob = f" · p={facet.target_prob:.2f}" if pd.notna(facet.target_prob) else ""
                hit = " ✓ top-1" if facet.top1_hit is True else " ✗ not top-1" if facet.top1_hit is False else ""
                explains = f" · explains {facet_scores[facet.facet]:.0%}" if facet.facet in facet_scores else ""
                if pd.notna(told_facets.get(facet.facet)):
                    explains += f" · facet score {told_facets[facet.facet]:.0%}"
                st.caption(f"act {facet.act_init:.1f} → **{facet.act_final:.1f}**{prob}{hit}{explains}")
                if st.button("Highlight", key=f"hl{facet.facet}", help="Highlight this facet's cluster on the map"):
                    st.query_params["facet"] = str(facet.facet)
                    st.rerun()

if not exemplars.empty:
    st.subheader("t-SNE map of the exemplars")
    st.caption("Each point is one exemplar image, placed by t-SNE of its fc7 code, coloured by facet. "
               "Hover for the image (kept for the exemplars nearest each centre) and activation; "
               "click a point or legend entry to highlight its facet.")
    points = exemplars[["image_id", "activation", "tsne_x", "tsne_y", "facet", "rank_in_facet"]].copy()
    points["image"] = [data_uri(p, 84) for p in exemplars["thumb_png"]]
    pick = alt.selection_point(fields=["facet"], bind="legend", name="pick",
                               value=[{"facet": selected}] if selected is not None else None)
    chart = (alt.Chart(points).mark_circle(size=36)
             .encode(x=alt.X("tsne_x", title=None, axis=None), y=alt.Y("tsne_y", title=None, axis=None),
                     color=alt.Color("facet:N", scale=alt.Scale(scheme="tableau10")),
                     opacity=alt.condition(pick, alt.value(0.9), alt.value(0.08)),
                     tooltip=["image", "image_id", alt.Tooltip("activation", format=".2f"), "facet", "rank_in_facet"])
             .add_params(pick).properties(height=460))
    event = st.altair_chart(chart, on_select="rerun", selection_mode="pick", key="tsne", width="stretch")
    picked = (event or {}).get("selection", {}).get("pick") if isinstance(event, dict) or hasattr(event, "get") else None
    if picked:
        facet_id = picked[0].get("facet")
        if facet_id is not None and facet_id != selected:
            st.query_params["facet"] = str(facet_id)
            st.rerun()

others = data.other_methods(ui.db(), run["model_sha256"], layer, unit, run["run_id"])
if not others.empty:
    st.subheader("Other methods and reruns")
    st.caption("Plain activation maximization from noise, center-biased regularization, Lucid's diversity "
               "objective (k images from noise pushed apart in style: MFV's data-free peer), and any reruns "
               "of this neuron, for comparison with the MFV facets above.")
    for run_id, group in others.groupby("run_id", sort=False):
        first = group.iloc[0]
        st.markdown(f"**{first['method']}** · `{run_id}`")
        for col, result in zip(st.columns(min(len(group), 10)), group.head(10).itertuples()):
            with col:
                ui.show_image(result.image_png, f"act {result.act_final:.1f}", 100)
