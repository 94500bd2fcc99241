"""The Layers page of a run as one JSON document: facet diversity per layer against its random-split
baseline, the layer table, and the evidence (the paper's claims, the methods compared, diversity per layer).

Numbers come through precompute.core.report, as the dashboard's Layers page and docs/results.md get them;
the charts' boxes are summarised here (min, quartiles, max), so the page draws them without the raw values.
"""
from __future__ import annotations

import pandas as pd

from ..core import report
from ..core.claims import WORDS
from .files import records
from .reads import StoreReader

EFFNET = "efficientnet-lite0"     # evaluated on another store (evaluate --effnet): its own section


def layers_document(reader: StoreReader, run: dict) -> dict:
    summary = reader.layer_summary(run["run_id"])
    order = summary["layer"].tolist()
    values = reader.diversity_values(run["run_id"])
    boxes = [{"layer": layer, **_box(group["facet_diversity"]), "null": _median(group["diversity_null"])}
             for layer, group in values.groupby("layer", sort=False)]
    return {"run": run["run_id"], "summary": records(summary.drop(columns=["depth"])),
            "diversity": sorted(boxes, key=lambda box: order.index(box["layer"])),
            "evidence": _evidence(reader, run["model"])}


def _evidence(reader: StoreReader, model: str) -> dict | None:
    """Claims, methods and per-layer diversity of the run's model; EfficientNet-Lite0's beside, if measured."""
    evaluations = reader.evaluations()
    mine = evaluations[evaluations["model"] == model]
    if mine.empty:
        return None
    layers = reader.model_layers()
    own = layers[layers["model"] == model]
    fc = own.loc[own["kind"] == "fc", "layer"].tolist()
    per_neuron = report.diversity_per_neuron(mine)
    evidence = {"claims": records(report.claim_rows(mine)),
                "methods": _table(report.fmt_table(report.method_table(mine, fc))),
                "diversity": [{"layer": layer, "measure": measure, **_box(group["value"])}
                              for (layer, measure), group in per_neuron.groupby(["layer", "measure"], sort=False)
                              if layer in own["layer"].tolist()],
                "layers": own["layer"].tolist()}
    effnet = evaluations[evaluations["model"] == EFFNET]
    if len(effnet) and model != EFFNET:
        table = report.method_table(effnet, report.fc_layers_of(effnet, layers, EFFNET)).dropna(axis=1, how="all")
        claims = report.claim_rows(effnet)
        evidence["effnet"] = {"methods": _table(report.fmt_table(table)),
                              "claims": records(claims[claims["verdict"] != WORDS[None]])}
    return evidence


def _box(values: pd.Series) -> dict:
    """A box plot's numbers (whiskers at min and max, as the dashboard's charts draw them); groups come from
    rows with a value, so there is at least one."""
    q = values.dropna().astype(float).quantile([0, 0.25, 0.5, 0.75, 1]).tolist()
    return {"min": q[0], "q1": q[1], "median": q[2], "q3": q[3], "max": q[4], "n": int(values.notna().sum())}


def _median(values: pd.Series) -> float | None:
    return float(values.median()) if values.notna().any() else None


def _table(frame: pd.DataFrame) -> dict:
    """A table of text cells, its index (the methods) as the first column."""
    return {"columns": ["method", *map(str, frame.columns)],
            "rows": [[str(index), *row] for index, row in zip(frame.index, frame.itertuples(index=False))]}
