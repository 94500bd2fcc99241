"""Layers: is a higher layer more multifaceted? Facet diversity per layer, on this store's data."""
import altair as alt
import streamlit as st

from dashboard import data, ui

st.title("Layers")
st.caption("The paper reports that neurons in higher layers are more multifaceted. Here is this store's "
           "evidence: facet diversity per layer against its random-split baseline, and how often synthesis "
           "reached its target.")
ui.require_store()
run = ui.choose_run(st.sidebar)
ui.set_params(run=run["run_id"])
summary = data.layer_summary(ui.store(), ui.version(), run["run_id"])
if summary.empty:
    st.info("This run has no layers yet.")
    st.stop()

values = data.diversity_values(ui.store(), ui.version(), run["run_id"])
order = summary["layer"].tolist()
if not values.empty:
    box = (alt.Chart(values).mark_boxplot(extent="min-max", size=28)
           .encode(x=alt.X("layer:N", sort=order, title="layer (input → output)"),
                   y=alt.Y("facet_diversity:Q", title="facet diversity"),
                   color=alt.Color("layer:N", sort=order, legend=None)))
    null = (alt.Chart(values).mark_tick(color="black", thickness=2, size=30)
            .encode(x=alt.X("layer:N", sort=order), y="median(diversity_null):Q",
                    tooltip=[alt.Tooltip("median(diversity_null):Q", title="random-split baseline", format=".3f")]))
    st.altair_chart(box + null, width="stretch")
    st.caption("Boxes: facet diversity of each layer's neurons. Black ticks: the median random-split baseline.")

table = summary.assign(
    share_raised=summary["share_raised"].map(lambda v: ui.fmt(v * 100, 0) + "%" if v == v and v is not None else "–"),
    share_top1=summary["share_top1"].map(lambda v: ui.fmt(v * 100, 0) + "%" if v == v and v is not None else "–"),
)
st.dataframe(table.drop(columns=["depth"]), hide_index=True, column_config={
    "median_diversity": st.column_config.NumberColumn("median diversity", format="%.3f"),
    "median_null": st.column_config.NumberColumn("median null", format="%.3f"),
    "share_raised": st.column_config.TextColumn("facets that raised their activation"),
    "share_top1": st.column_config.TextColumn("facets that became top-1 (class layer)"),
})
