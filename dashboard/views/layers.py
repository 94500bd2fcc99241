"""Layers: is a higher layer more multifaceted? Facet diversity per layer, on this store's data; then the
Evidence: the paper's claims with their measured verdicts and the methods compared (evaluations table)."""
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
summary = data.layer_summary(ui.db(), run["run_id"])
if summary.empty:
    st.info("This run has no layers yet.")
    st.stop()

values = data.diversity_values(ui.db(), run["run_id"])
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

# ---- Evidence: the paper's claims, measured (python -m precompute evaluate) ----------------------------
from precompute.core import report  # noqa: E402  (torch-free: tables and charts shared with docs/results.md)

st.header("Evidence")
st.caption("Does this atlas reproduce the paper, and by how much does MFV beat the baselines? Numbers from "
           "`python -m precompute evaluate`: each method's images measured against the neuron's real exemplars, "
           "a second model and simple image statistics; each claim's verdict is computed from them.")
evaluations = data.evaluations(ui.db())
mine = evaluations[evaluations["model"] == run["model"]] if not evaluations.empty else evaluations
if mine.empty:
    st.info("This store has no evaluations yet. Measure them with "
            f"`python -m precompute evaluate --store {ui.store_dir()}` (about a minute for the demo store), "
            "then reload this page.")
    st.stop()

all_layers = data.model_layers(ui.db())
own = all_layers[all_layers["model"] == run["model"]]
fc_layers = own.loc[own["kind"] == "fc", "layer"].tolist()

st.subheader("The claims")
BADGES = {"supported": "green", "partly supported": "orange", "not supported": "red", "not measured": "gray"}
for claim in report.claim_rows(mine).itertuples():
    st.markdown(f":{BADGES[claim.verdict]}-badge[{claim.verdict}] **{claim.statement}**  \n{claim.evidence}.")

st.subheader("Methods compared")
st.caption("Per-neuron values averaged over the run (image diversity: median). Distances are to the neuron's own "
           "exemplars (lower: more like real images); centre share (0.25 = no preference) and fragments on fully "
           "connected layers; model B is the same CNN trained with another seed.")
st.dataframe(report.fmt_table(report.method_table(mine, fc_layers)), width="stretch")

st.subheader("Diversity per layer")
st.caption("Each neuron's facet diversity (MFV's clusters, as stored) and image diversity (the spread of its "
           "synthesized images' fc7 codes ÷ the spread of its exemplars'), for MFV and the diversity baseline.")
st.altair_chart(report.diversity_boxes(mine, own["layer"].tolist()), width="stretch", height=380, theme=None)

effnet = evaluations[evaluations["model"] == "efficientnet-lite0"]
if not effnet.empty and run["model"] != "efficientnet-lite0":
    st.subheader("EfficientNet-Lite0 (data-free methods)")
    st.caption("A few ImageNet class neurons of a real network, synthesized by the methods that need no images "
               "(no ImageNet images ship here, so no MFV and no exemplar distances).")
    effnet_fc = report.fc_layers_of(effnet, all_layers, "efficientnet-lite0")
    st.dataframe(report.fmt_table(report.method_table(effnet, effnet_fc).dropna(axis=1, how="all")), width="stretch")
    for claim in report.claim_rows(effnet).itertuples():
        if claim.verdict != "not measured":
            st.markdown(f":{BADGES[claim.verdict]}-badge[{claim.verdict}] **{claim.statement}** (EfficientNet-Lite0)  \n"
                        f"{claim.evidence}.")
