"""The dashboard's queries of the store, cached. All SQL runs through dashboard.sql.

Every cached function takes the `Database` (atlas.duckdb's path and mtime), so a rebuilt store
(after a rerun) is read afresh while repeated page views hit the cache.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pandas as pd
import streamlit as st

from dashboard.sql import run_readonly

SORTS = {  # label -> ORDER BY clause (a fixed list: user input never reaches SQL text)
    "facet diversity, high first": "facet_diversity DESC NULLS LAST, unit",
    "facet diversity, low first": "facet_diversity ASC NULLS LAST, unit",
    "unit": "unit",
    "best activation reached": "best_act_final DESC NULLS LAST, unit",
    "explanation score, high first": "explanation DESC NULLS LAST, unit",
    "explanation score, low first": "explanation ASC NULLS LAST, unit",
    "facet score, high first": "facet_score DESC NULLS LAST, unit",
    "facet score, low first": "facet_score ASC NULLS LAST, unit",
    "label": "label, unit",
}


class Database(NamedTuple):
    """The atlas.duckdb the pages query, and its mtime: part of every cache key, so a rebuilt
    store is read afresh."""
    path: str
    version: float

    @classmethod
    def at(cls, path: str | Path) -> "Database":
        return cls(str(path), Path(path).stat().st_mtime if Path(path).exists() else 0.0)


def _query(db: Database, sql: str, params=None, max_rows: int = 200_000) -> pd.DataFrame:
    return run_readonly(db.path, sql, timeout_s=20, max_rows=max_rows, params=params)


@st.cache_data(show_spinner=False, max_entries=64)
def runs(db: Database) -> pd.DataFrame:
    return _query(db, """SELECT run_id, method, model, model_sha256, dataset, status, created_at, seconds,
                                   seed, device, code_version, config_json
                            FROM runs ORDER BY method = 'mfv' DESC, created_at""")


@st.cache_data(show_spinner=False, max_entries=64)
def layers(db: Database, run_id: str) -> pd.DataFrame:
    """A run's layers, with their receptive fields (NULL in stores from before they were recorded)."""
    fields = ("rf_size, rf_stride, rf_offset, rf_method" if has_column(db, "layers", "rf_size") else
              "NULL AS rf_size, NULL AS rf_stride, NULL AS rf_offset, NULL AS rf_method")
    return _query(db, f"""SELECT layer, depth, kind, role, n_units, shape, {fields} FROM layers
                             WHERE run_id = ? ORDER BY depth""", [run_id])


@st.cache_data(show_spinner=False, max_entries=16)
def has_table(db: Database, name: str) -> bool:
    """Whether the store's database has table `name` (older stores lack the newer tables)."""
    found = _query(db, "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = ?", [name])
    return bool(int(found["n"][0]))


@st.cache_data(show_spinner=False, max_entries=64)
def has_column(db: Database, table: str, column: str) -> bool:
    """Whether `table` has `column` (a store consolidated by an older version lacks the newer ones)."""
    found = _query(db, """SELECT count(*) AS n FROM information_schema.columns
                          WHERE table_name = ? AND column_name = ?""", [table, column])
    return bool(int(found["n"][0]))


def _neuron_scores(db: Database) -> str:
    """A FROM-clause source of each neuron's explanation score (all its images as references) and, for
    MFV runs, its facet score (its facet images as references)."""
    explanation = ("""(SELECT run_id, layer, unit, score AS explanation FROM scores
                      WHERE facet IS NULL AND method <> 'exemplars')""" if has_table(db, "scores") else
                   "(SELECT NULL::VARCHAR AS run_id, NULL::VARCHAR AS layer, NULL::INT AS unit, NULL::DOUBLE AS explanation)")
    facet = ("""(SELECT run_id, layer, unit, score AS facet_score FROM facet_scores
                WHERE facet IS NULL AND method = 'mfv')""" if has_table(db, "facet_scores") else
             "(SELECT NULL::VARCHAR AS run_id, NULL::VARCHAR AS layer, NULL::INT AS unit, NULL::DOUBLE AS facet_score)")
    return f"(SELECT * FROM {explanation} FULL JOIN {facet} USING (run_id, layer, unit))"


@st.cache_data(show_spinner=False, max_entries=512)
def neuron_page(db: Database, run_id: str, layer: str, search: str, div_range: tuple[float, float],
                include_unscored: bool, sort: str, limit: int, offset: int) -> tuple[pd.DataFrame, int]:
    """One page of a layer's neurons matching the filters, and how many match in all."""
    where = """run_id = ? AND layer = ? AND (label ILIKE ? OR CAST(unit AS VARCHAR) = ? OR top_class ILIKE ?)
               AND ((facet_diversity BETWEEN ? AND ?) OR (? AND facet_diversity IS NULL))"""
    like = f"%{search}%"
    params = [run_id, layer, like, search, like, div_range[0], div_range[1], include_unscored]
    total = int(_query(db, f"SELECT count(*) AS n FROM neurons WHERE {where}", params)["n"][0])
    page = _query(db, f"""SELECT unit, label, status, reason, n_exemplars, k, facet_diversity, diversity_null,
                                    best_act_final, max_activation, top_class, top_class_share, explanation,
                                    facet_score
                             FROM neurons LEFT JOIN {_neuron_scores(db)} USING (run_id, layer, unit)
                             WHERE {where} ORDER BY {SORTS[sort]} LIMIT ? OFFSET ?""",
                  params + [limit, offset])
    return page, total


@st.cache_data(show_spinner=False, max_entries=512)
def facet_images(db: Database, run_id: str, layer: str, units: tuple[int, ...]) -> pd.DataFrame:
    if not units:
        return pd.DataFrame(columns=["unit", "facet", "image_png"])
    marks = ",".join("?" * len(units))
    return _query(db, f"""SELECT unit, facet, size, image_png FROM facets
                             WHERE run_id = ? AND layer = ? AND unit IN ({marks}) ORDER BY unit, facet""",
                  [run_id, layer, *units])


@st.cache_data(show_spinner=False, max_entries=256)
def neuron(db: Database, run_id: str, layer: str, unit: int) -> dict | None:
    df = _query(db, "SELECT * FROM neurons WHERE run_id = ? AND layer = ? AND unit = ?", [run_id, layer, unit])
    return df.iloc[0].to_dict() if len(df) else None


@st.cache_data(show_spinner=False, max_entries=256)
def facets(db: Database, run_id: str, layer: str, unit: int) -> pd.DataFrame:
    return _query(db, """SELECT facet, size, init_png, image_png, act_init, act_final, target_prob, top1_hit, steps
                            FROM facets WHERE run_id = ? AND layer = ? AND unit = ? ORDER BY facet""",
                  [run_id, layer, unit])


@st.cache_data(show_spinner=False, max_entries=256)
def scores(db: Database, run_id: str, layer: str, unit: int) -> pd.DataFrame:
    """A neuron's explanation scores in one run: per facet and for the neuron (facet NaN), its images'
    (method = the run's) and its exemplars' (method 'exemplars'); empty for a store without them."""
    if not has_table(db, "scores"):
        return pd.DataFrame(columns=["method", "facet", "score", "trials", "backbone", "heldout"])
    return _query(db, """SELECT method, facet, score, trials, backbone, heldout FROM scores
                            WHERE run_id = ? AND layer = ? AND unit = ? ORDER BY method, facet NULLS FIRST""",
                  [run_id, layer, unit])


@st.cache_data(show_spinner=False, max_entries=256)
def facet_scores(db: Database, run_id: str, layer: str, unit: int) -> pd.DataFrame:
    """A neuron's facet scores in an MFV run: per facet and for the neuron (facet NaN), with its facet
    images (method 'mfv'), its exemplars ('exemplars') or a baseline's image as references; empty for a
    store without them."""
    if not has_table(db, "facet_scores"):
        return pd.DataFrame(columns=["method", "facet", "score", "trials", "backbone", "heldout"])
    return _query(db, """SELECT method, facet, score, trials, backbone, heldout FROM facet_scores
                            WHERE run_id = ? AND layer = ? AND unit = ? ORDER BY method, facet NULLS FIRST""",
                  [run_id, layer, unit])


@st.cache_data(show_spinner=False, max_entries=128)
def exemplars(db: Database, run_id: str, layer: str, unit: int) -> pd.DataFrame:
    where = ("e.pos_y, e.pos_x, e.crop_png" if has_column(db, "exemplars", "crop_png") else
             "NULL AS pos_y, NULL AS pos_x, NULL AS crop_png")
    return _query(db, f"""SELECT e.image_id, e.activation, e.tsne_x, e.tsne_y, e.facet, e.rank_in_facet,
                                    e.dist_to_centroid, t.png AS thumb_png, {where}
                            FROM exemplars e JOIN runs r USING (run_id)
                            LEFT JOIN thumbnails t ON t.dataset = r.dataset AND t.image_id = e.image_id
                            WHERE e.run_id = ? AND e.layer = ? AND e.unit = ?
                            ORDER BY e.facet, e.rank_in_facet""", [run_id, layer, unit])


@st.cache_data(show_spinner=False, max_entries=256)
def other_methods(db: Database, model_sha256: str, layer: str, unit: int, exclude_run: str) -> pd.DataFrame:
    """Results of the same neuron (same model weights) from every other run: baselines and reruns."""
    return _query(db, """SELECT r.run_id, r.method, r.created_at, r.config_json, f.facet, f.image_png, f.init_png,
                                   f.act_init, f.act_final, f.target_prob, f.top1_hit, f.steps
                            FROM facets f JOIN runs r USING (run_id)
                            WHERE r.model_sha256 = ? AND f.layer = ? AND f.unit = ? AND r.run_id <> ?
                            ORDER BY r.created_at, r.run_id, f.facet""",
                  [model_sha256, layer, unit, exclude_run])


@st.cache_data(show_spinner=False, max_entries=64)
def layer_summary(db: Database, run_id: str) -> pd.DataFrame:
    return _query(db, """
        SELECT l.depth, l.layer, l.kind, l.n_units,
               count(n.unit) AS neurons,
               count(*) FILTER (n.status = 'dead') AS dead,
               count(*) FILTER (n.status = 'failed') AS failed,
               median(n.facet_diversity) AS median_diversity,
               median(n.diversity_null) AS median_null,
               (SELECT avg((f.act_final > f.act_init)::INT) FROM facets f
                 WHERE f.run_id = l.run_id AND f.layer = l.layer) AS share_raised,
               (SELECT avg(f.top1_hit::INT) FROM facets f
                 WHERE f.run_id = l.run_id AND f.layer = l.layer) AS share_top1
        FROM layers l LEFT JOIN neurons n ON n.run_id = l.run_id AND n.layer = l.layer
        WHERE l.run_id = ? GROUP BY ALL ORDER BY l.depth""", [run_id])


@st.cache_data(show_spinner=False, max_entries=64)
def diversity_values(db: Database, run_id: str) -> pd.DataFrame:
    return _query(db, """SELECT n.layer, l.depth, n.unit, n.facet_diversity, n.diversity_null
                            FROM neurons n JOIN layers l USING (run_id, layer)
                            WHERE n.run_id = ? AND n.facet_diversity IS NOT NULL""", [run_id])


@st.cache_data(show_spinner=False, max_entries=16)
def evaluations(db: Database) -> pd.DataFrame:
    """Every evaluation row (python -m precompute evaluate); empty for a store that has none, or
    whose database predates the table (schema version 1)."""
    if not has_table(db, "evaluations"):
        return pd.DataFrame()
    return _query(db, "SELECT run_id, model, method, layer, unit, metric, value, n, detail FROM evaluations")


@st.cache_data(show_spinner=False, max_entries=16)
def model_layers(db: Database) -> pd.DataFrame:
    """Each model's layers in the store, input to output, with their kind."""
    return _query(db, """SELECT DISTINCT r.model, l.layer, l.depth, l.kind FROM layers l JOIN runs r USING (run_id)
                            ORDER BY r.model, l.depth""")
