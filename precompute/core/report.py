"""The evidence as tables, charts, PNG figures and the results page's block (docs/results.md).

Everything is built from the store's `evaluations` rows (pandas in, pandas/Altair out) and is
shared by the dashboard's Evidence section and `python -m precompute evaluate --figures/--results`,
so the dashboard and docs/results.md show the same numbers. No torch here: the dashboard imports it.
"""
from __future__ import annotations

import re
from pathlib import Path

import altair as alt
import pandas as pd

from .claims import CLAIMS, WORDS
from .errors import AtlasError
from .methods import METHODS

METHOD_ORDER = ["mfv", "diversity", "noise", "center-bias", "exemplars"]
METHOD_NAMES = {name: short for name, (short, _) in METHODS.items()} | {"exemplars": "real exemplars (reference)"}
COLUMNS = {   # metric -> (column title, digits, percent?)
    "explanation": ("explanation score", 0, True),
    "act_final": ("activation reached", 2, False),
    "raised": ("raised its activation", 0, True),
    "top1": ("top-1 (class neurons)", 0, True),
    "top1_model_b": ("top-1 under model B", 0, True),
    "image_diversity": ("image diversity", 2, False),
    "image_spread": ("image spread (raw)", 3, False),
    "hist_chi2": ("histogram χ² to exemplars", 3, False),
    "code_distance": ("fc7 distance to exemplars", 3, False),
    "centre_share": ("centre share (fc)", 2, False),
    "fragments": ("fragments (fc)", 2, False),
    "moved": ("moved from init", 3, False),
}
FC_ONLY = {"centre_share", "fragments"}    # conv units are centred by their receptive field (claims.claim4)
START, END = "<!-- results:start -->", "<!-- results:end -->"
COMMAND = "python -m precompute evaluate --store data/demo --effnet 8 --figures docs/figures --results docs/results.md"


def load(database: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(evaluation rows, layers of the evaluated runs with depth and kind) from an atlas.duckdb."""
    import duckdb
    con = duckdb.connect(str(database), read_only=True)
    try:
        rows = con.execute("SELECT * FROM evaluations").df()
        layers = con.execute("""SELECT DISTINCT r.model, l.layer, l.depth, l.kind FROM layers l JOIN runs r USING (run_id)
                                ORDER BY r.model, l.depth""").df()
    finally:
        con.close()
    return rows, layers


def for_model(rows: pd.DataFrame, model: str) -> pd.DataFrame:
    return rows[rows["model"] == model]


def fc_layers_of(rows: pd.DataFrame, layers: pd.DataFrame, model: str) -> list[str]:
    """The fully connected layers of a model's evaluation: from the store's layers table, or, for rows
    measured on another store (the EfficientNet-Lite0 subset, class neurons only), every layer they name."""
    own = layers[layers["model"] == model]
    if len(own):
        return own.loc[own["kind"] == "fc", "layer"].tolist()
    return sorted(set(rows.loc[rows["model"] == model, "layer"].dropna()))


def method_table(rows: pd.DataFrame, fc_layers: list[str]) -> pd.DataFrame:
    """One row per method: its run-level numbers (centre share and fragments on fc layers only)."""
    table = {}
    for method in [m for m in METHOD_ORDER if m in set(rows["method"].dropna())]:
        mine = rows[(rows["method"] == method)]
        values = {}
        for metric in COLUMNS:
            if metric in FC_ONLY:
                units = mine[(mine["metric"] == metric) & mine["unit"].notna() & mine["layer"].isin(fc_layers)]
                values[metric] = units["value"].mean() if len(units) else None
            else:
                run = mine[(mine["metric"] == metric) & mine["layer"].isna() & mine["unit"].isna()]
                values[metric] = run["value"].iloc[0] if len(run) else None
        table[METHOD_NAMES[method]] = values
    return pd.DataFrame(table).T.rename(columns={m: c[0] for m, c in COLUMNS.items()})


def layer_medians(rows: pd.DataFrame, layers: list[str]) -> pd.DataFrame:
    """Per layer (input to output): the diversity medians the claims on depth rest on."""
    series = {"facet diversity (MFV)": ("mfv", "facet_diversity"), "random-split baseline": ("mfv", "diversity_null"),
              "init diversity, MFV": ("mfv", "init_diversity"),
              "image diversity, MFV": ("mfv", "image_diversity"),
              "image diversity, diversity": ("diversity", "image_diversity")}
    out = pd.DataFrame({"layer": layers})
    for title, (method, metric) in series.items():
        mine = rows[(rows["method"] == method) & (rows["metric"] == metric) & rows["unit"].isna() & rows["layer"].notna()]
        out[title] = out["layer"].map(mine.set_index("layer")["value"])
    return out.dropna(axis=1, how="all")


def claim_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """claim, statement, verdict, evidence for one model's rows."""
    claims = rows[rows["metric"].isin(CLAIMS)].sort_values("metric")
    return pd.DataFrame({"claim": claims["metric"], "statement": claims["metric"].map(CLAIMS),
                         "verdict": [WORDS[None if pd.isna(v) else float(v)] for v in claims["value"]],
                         "evidence": claims["detail"]})


def fmt_table(table: pd.DataFrame) -> pd.DataFrame:
    """Numbers as text: percentages for shares, fixed digits otherwise, '–' where not measured."""
    titles = {c[0]: c for c in COLUMNS.values()}
    out = table.copy().astype(object)
    for column in out.columns:
        _, digits, percent = titles.get(column, (column, 2, False))
        out[column] = [("–" if v is None or pd.isna(v) else f"{v * 100:.{digits}f}%" if percent else f"{v:.{digits}f}")
                       for v in table[column]]
    return out


# ---- charts ------------------------------------------------------------------------------------------
def diversity_chart(medians: pd.DataFrame) -> alt.Chart:
    long = medians.melt("layer", var_name="measure", value_name="median").dropna()
    order = medians["layer"].tolist()
    return (alt.Chart(long).mark_line(point=True)
            .encode(x=alt.X("layer:N", sort=order, title="layer (input → output)"),
                    y=alt.Y("median:Q", title="median over the layer's neurons"),
                    color=alt.Color("measure:N", title=None, legend=alt.Legend(orient="bottom", columns=2)),
                    tooltip=["layer", "measure", alt.Tooltip("median:Q", format=".3f")])
            .properties(width=380, height=220, title="Diversity per layer"))


def diversity_per_neuron(rows: pd.DataFrame) -> pd.DataFrame:
    """Each neuron's diversity measures (facet diversity of MFV's clusters, image diversity of MFV's and the
    diversity baseline's images), one row per neuron and measure; only values above 0 (a log scale shows them)."""
    series = {("mfv", "facet_diversity"): "facet diversity (MFV clusters)",
              ("mfv", "image_diversity"): "image diversity, MFV",
              ("diversity", "image_diversity"): "image diversity, diversity (Lucid)"}
    keys = pd.Series(list(zip(rows["method"], rows["metric"])), index=rows.index)
    mine = rows[keys.isin(list(series)) & rows["unit"].notna() & (rows["value"] > 0)]
    return mine.assign(measure=[series[(m, k)] for m, k in zip(mine["method"], mine["metric"])])


def diversity_boxes(rows: pd.DataFrame, layers: list[str]) -> alt.Chart:
    """Per layer, the distribution over neurons of each diversity measure, one box per method (log
    scale clamped to 0.01..100: beyond it a ratio says only "nearly identical" or "exemplars nearly alike")."""
    long = diversity_per_neuron(rows)
    return (alt.Chart(long).mark_boxplot(extent="min-max", size=12)
            .encode(x=alt.X("layer:N", sort=layers, title="layer (input → output)"), xOffset="measure:N",
                    # log: a neuron whose few exemplars are nearly alike has a ratio in the tens
                    y=alt.Y("value:Q", title="diversity (log; 1 = as varied as its exemplars)",
                            scale=alt.Scale(type="log", domain=[0.01, 100], clamp=True)),
                    color=alt.Color("measure:N", title=None, legend=alt.Legend(orient="bottom")))
            .properties(height=320))


def facet_cluster_chart(rows: pd.DataFrame, layers: list[str]) -> alt.Chart:
    mine = rows[(rows["method"] == "mfv") & rows["unit"].isna() & rows["layer"].notna()
                & rows["metric"].isin(["facet_to_cluster", "facet_to_cluster_chance"])]
    long = mine.assign(measure=mine["metric"].map({"facet_to_cluster": "facet image nearest its own cluster",
                                                   "facet_to_cluster_chance": "chance (1/k)"}))
    return (alt.Chart(long).mark_bar()
            .encode(x=alt.X("layer:N", sort=layers, title="layer"), xOffset="measure:N",
                    y=alt.Y("value:Q", title="share of MFV facets", axis=alt.Axis(format="%")),
                    color=alt.Color("measure:N", title=None, legend=alt.Legend(orient="bottom"),
                                    scale=alt.Scale(domain=["facet image nearest its own cluster", "chance (1/k)"],
                                                    range=["#4c78a8", "#bbbbbb"])),
                    tooltip=["layer", "measure", alt.Tooltip("value:Q", format=".1%")])
            .properties(width=380, height=220, title="Do MFV facet images keep their cluster?"))


def _bars(long: pd.DataFrame, measure: str, chance: float | None) -> alt.Chart:
    chart = (alt.Chart(long).transform_filter(alt.datum.measure == measure).mark_bar()
             .encode(y=alt.Y("method:N", sort=[METHOD_NAMES[m] for m in METHOD_ORDER], title=None),
                     x=alt.X("value:Q", title=None), color=alt.Color("method:N", legend=None),
                     tooltip=["method", alt.Tooltip("value:Q", format=".3f")])
             .properties(width=220, height=120, title=measure))
    if chance is not None:   # what an image with no preference would score
        chart += alt.Chart(pd.DataFrame({"value": [chance]})).mark_rule(strokeDash=[4, 3]).encode(x="value:Q")
    return chart


def method_bars(table: pd.DataFrame, metrics: list[str], title: str, chance: float | None = None) -> alt.Chart:
    """One bar chart per metric, methods as bars; `chance` draws a dashed rule on the first."""
    titles = [COLUMNS[m][0] for m in metrics]
    long = table[titles].reset_index(names="method").melt("method", var_name="measure", value_name="value").dropna()
    long["value"] = long["value"].astype(float)
    return alt.hconcat(*[_bars(long, t, chance if i == 0 else None) for i, t in enumerate(titles)], title=title)


def claim_charts(rows: pd.DataFrame, layers: pd.DataFrame) -> dict[str, alt.Chart]:
    names = layers["layer"].tolist()
    fc = layers.loc[layers["kind"] == "fc", "layer"].tolist()
    table = method_table(rows, fc)
    return {"claim1": facet_cluster_chart(rows, names),
            "claim2": diversity_chart(layer_medians(rows, names)),
            "claim3": method_bars(table, ["hist_chi2", "code_distance"], "Distance to real exemplars (lower: more natural)"),
            "claim4": method_bars(table, ["centre_share", "fragments"], "Centred object or fragments? (fc layers)",
                                  chance=0.25)}


# ---- files -----------------------------------------------------------------------------------------------
def write_figures(charts: dict[str, alt.Chart], folder: Path) -> list[Path]:
    try:
        import vl_convert  # noqa: F401  (Altair's PNG export)
    except ImportError:
        raise AtlasError("--figures needs vl-convert-python: pip install -r requirements-dev.txt") from None
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, chart in charts.items():
        path = folder / f"{name}.png"
        chart.save(str(path), scale_factor=1.5)
        paths.append(path)
    return paths


def markdown_table(table: pd.DataFrame, index_title: str | None = None) -> str:
    frame = table.reset_index(names=index_title) if index_title else table
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join("–" if pd.isna(v) else str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def results_block(rows: pd.DataFrame, layers: pd.DataFrame, store: Path, figures: Path | None, page: Path) -> str:
    main = rows[rows["model"] != "efficientnet-lite0"]
    model = main["model"].dropna().iloc[0] if len(main) else "?"
    own_layers = layers[layers["model"] == model]
    fc = fc_layers_of(main, layers, model)
    medians = layer_medians(main, own_layers["layer"].tolist()).set_index("layer").map(
        lambda v: "–" if pd.isna(v) else f"{v:.2f}")
    parts = [START, f"<!-- generated by `{COMMAND}` (store `{_rel(store, page)}`); do not edit by hand -->", "",
             f"**Method comparison** (model `{model}`; per-neuron values averaged over the run, image diversity as a "
             "median; centre share and fragments on fully connected layers):", "",
             markdown_table(fmt_table(method_table(main, fc)), "method"), "",
             "**Diversity per layer** (medians over each layer's neurons):", "",
             markdown_table(medians, "layer"), "", "**The claims:**", ""]
    for claim in claim_rows(main).itertuples():
        figure = f" ![{claim.claim}]({_rel(figures / f'{claim.claim}.png', page)})" if figures else ""
        parts.append(f"{claim.claim[-1]}. *{claim.statement}* — **{claim.verdict}**: {claim.evidence}.{figure}")
        parts.append("")
    effnet = rows[rows["model"] == "efficientnet-lite0"]
    if len(effnet):
        effnet_fc = fc_layers_of(effnet, layers, "efficientnet-lite0")
        parts += ["**EfficientNet-Lite0 at 224 px** (class neurons; MFV on class folders of crops of shipped photos, "
                  "explanation score on held-out crops of the same photos, model B and the score's backbone: "
                  "EfficientNet-Lite2):", "",
                  markdown_table(fmt_table(method_table(effnet, effnet_fc).dropna(axis=1, how="all")), "method"), ""]
        measured = claim_rows(effnet)
        for claim in measured[measured["verdict"] != WORDS[None]].itertuples():
            parts += [f"Claim {claim.claim[-1]} on EfficientNet-Lite0 — **{claim.verdict}**: {claim.evidence}.", ""]
    return "\n".join(parts + [END])


def _rel(path: Path, page: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(page.resolve().parent))
    except ValueError:
        return str(path)


def rewrite_block(page: Path, block: str) -> None:
    text = page.read_text() if page.exists() else ""
    if START in text and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, count=1, flags=re.S)
    else:
        raise AtlasError(f"{page} has no '{START}' ... '{END}' block to rewrite; add the two markers where "
                         "the results belong")
    page.write_text(text)


def write_report(store: Path, figures: str | None, page: str | None) -> list[Path]:
    """Figures (one per claim) and/or the results page's block, from the store's evaluations."""
    from .store import ensure_database
    rows, layers = load(ensure_database(store))
    main = rows[rows["model"] != "efficientnet-lite0"]
    model = main["model"].dropna().iloc[0]
    written = []
    if figures:
        written += write_figures(claim_charts(main, layers[layers["model"] == model]), Path(figures))
    if page:
        rewrite_block(Path(page), results_block(rows, layers, store, Path(figures) if figures else None, Path(page)))
        written.append(Path(page))
    return written
