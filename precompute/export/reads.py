"""What the export reads from a store: its atlas.duckdb, opened read-only and locked down, a layer at a time.

The export never writes into the store: `ensure_database` builds a missing or stale database in a cache
folder when the store cannot be written (as the dashboard does), and the connection is read-only with
external access off (precompute.core.store.READ_ONLY_CONFIG).
"""
from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from ..core.errors import AtlasError
from ..core.store import DB_NAME, READ_ONLY_CONFIG, TABLES, ensure_database

# Each neuron's explanation score (all its images as references) and, for MFV runs, its facet score:
# the columns the Atlas cards and their sorts show (as dashboard.data._neuron_scores joins them).
_NEURON_SCORES = """(SELECT * FROM
    (SELECT run_id, layer, unit, score AS explanation FROM scores WHERE facet IS NULL AND method <> 'exemplars')
    FULL JOIN (SELECT run_id, layer, unit, score AS facet_score FROM facet_scores
               WHERE facet IS NULL AND method = 'mfv') USING (run_id, layer, unit))"""


def open_store(store: str | Path) -> "StoreReader":
    """The store at `store`, ready to read; an AtlasError naming the path if there is none there."""
    root = Path(store).expanduser()
    if not root.is_dir():
        raise AtlasError(f"no atlas store at {root}: the folder does not exist")
    if not (root / "parts").is_dir() and not (root / DB_NAME).is_file():
        raise AtlasError(f"{root} is not an atlas store (it has neither parts/ nor {DB_NAME}); "
                         "build one with python -m precompute build --store DIR")
    try:
        database = ensure_database(root)
        return StoreReader(duckdb.connect(str(database), read_only=True, config=dict(READ_ONLY_CONFIG)), root)
    except duckdb.Error as err:
        raise AtlasError(f"cannot read the atlas store at {root}: {str(err).strip().splitlines()[0]}") from err


class StoreReader:
    """Queries of one store for the export; every result is a pandas frame (or Arrow, for the SQL tables)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, root: Path):
        self.con = con
        self.root = root

    def close(self) -> None:
        self.con.close()

    def _frame(self, sql: str, params=None) -> pd.DataFrame:
        return self.con.execute(sql, params).df()

    def mfv_runs(self) -> pd.DataFrame:
        """The MFV runs, the ones an atlas shows (the others appear beside them on Neuron pages)."""
        runs = self._frame("""SELECT run_id, method, model, model_sha256, dataset, status, created_at, seed, config_json
                              FROM runs ORDER BY method = 'mfv' DESC, created_at""")
        return runs[runs["method"] == "mfv"].reset_index(drop=True)

    def neuron_count(self, run_id: str) -> int:
        return self.con.execute("SELECT count(*) FROM neurons WHERE run_id = ?", [run_id]).fetchone()[0]

    def layers(self, run_id: str) -> pd.DataFrame:
        return self._frame("""SELECT layer, depth, kind, role, n_units, shape, rf_size, rf_stride, rf_offset, rf_method
                              FROM layers WHERE run_id = ? ORDER BY depth""", [run_id])

    def neurons(self, run_id: str, layer: str) -> pd.DataFrame:
        """A layer's neurons with their scores, in the Atlas's default order (facet diversity, high first)."""
        return self._frame(f"""SELECT unit, label, status, reason, n_exemplars, k, facet_diversity, diversity_null,
                                      best_act_final, max_activation, top_class, top_class_share, explanation, facet_score
                               FROM neurons LEFT JOIN {_NEURON_SCORES} USING (run_id, layer, unit)
                               WHERE run_id = ? AND layer = ?
                               ORDER BY facet_diversity DESC NULLS LAST, unit""", [run_id, layer])

    def facets(self, run_id: str, layer: str) -> pd.DataFrame:
        return self._frame("""SELECT unit, facet, size, init_png, image_png, act_init, act_final, target_prob, top1_hit, steps
                              FROM facets WHERE run_id = ? AND layer = ? ORDER BY unit, facet""", [run_id, layer])

    def exemplars(self, run_id: str, layer: str) -> pd.DataFrame:
        """A layer's exemplars with their thumbnails (kept for the few nearest each facet's centre)."""
        return self._frame("""SELECT e.unit, e.image_id, e.activation, e.tsne_x, e.tsne_y, e.facet, e.rank_in_facet,
                                     e.pos_y, e.pos_x, e.crop_png, t.png AS thumb_png
                              FROM exemplars e JOIN runs r USING (run_id)
                              LEFT JOIN thumbnails t ON t.dataset = r.dataset AND t.image_id = e.image_id
                              WHERE e.run_id = ? AND e.layer = ?
                              ORDER BY e.unit, e.facet, e.rank_in_facet""", [run_id, layer])

    def other_methods(self, model_sha256: str, layer: str, exclude_run: str) -> pd.DataFrame:
        """Every other run's results for the layer's neurons (same model weights): baselines and reruns."""
        return self._frame("""SELECT f.unit, r.run_id, r.method, f.facet, f.image_png, f.act_final
                              FROM facets f JOIN runs r USING (run_id)
                              WHERE r.model_sha256 = ? AND f.layer = ? AND r.run_id <> ?
                              ORDER BY f.unit, r.created_at, r.run_id, f.facet""", [model_sha256, layer, exclude_run])

    def scores(self, run_id: str, layer: str) -> pd.DataFrame:
        return self._frame("""SELECT unit, method, facet, score, trials, backbone, heldout FROM scores
                              WHERE run_id = ? AND layer = ? ORDER BY unit, method, facet NULLS FIRST""", [run_id, layer])

    def facet_scores(self, run_id: str, layer: str) -> pd.DataFrame:
        return self._frame("""SELECT unit, method, facet, score, trials, backbone, heldout FROM facet_scores
                              WHERE run_id = ? AND layer = ? ORDER BY unit, method, facet NULLS FIRST""", [run_id, layer])

    def layer_summary(self, run_id: str) -> pd.DataFrame:
        """Per layer: neuron counts, diversity medians, and the share of facets that raised their activation
        or became top-1 (the Layers page's table)."""
        return self._frame("""
            WITH f AS (SELECT layer, avg((act_final > act_init)::INT) AS share_raised, avg(top1_hit::INT) AS share_top1
                       FROM facets WHERE run_id = $run GROUP BY layer),
                 n AS (SELECT layer, count(*) AS neurons, count(*) FILTER (status = 'dead') AS dead,
                              count(*) FILTER (status = 'failed') AS failed, median(facet_diversity) AS median_diversity,
                              median(diversity_null) AS median_null
                       FROM neurons WHERE run_id = $run GROUP BY layer)
            SELECT l.depth, l.layer, l.kind, l.n_units, coalesce(n.neurons, 0) AS neurons, coalesce(n.dead, 0) AS dead,
                   coalesce(n.failed, 0) AS failed, n.median_diversity, n.median_null, f.share_raised, f.share_top1
            FROM layers l LEFT JOIN n USING (layer) LEFT JOIN f USING (layer)
            WHERE l.run_id = $run ORDER BY l.depth""", {"run": run_id})

    def diversity_values(self, run_id: str) -> pd.DataFrame:
        return self._frame("""SELECT layer, facet_diversity, diversity_null FROM neurons
                              WHERE run_id = ? AND facet_diversity IS NOT NULL""", [run_id])

    def evaluations(self) -> pd.DataFrame:
        return self._frame("SELECT run_id, model, method, layer, unit, metric, value, n, detail FROM evaluations")

    def model_layers(self) -> pd.DataFrame:
        return self._frame("""SELECT DISTINCT r.model, l.layer, l.depth, l.kind FROM layers l JOIN runs r USING (run_id)
                              ORDER BY r.model, l.depth""")

    def sql_tables(self) -> list[str]:
        """The tables a visitor's SQL can name: every store table and atlas_meta."""
        present = {row[0] for row in self.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        return [name for name in (*TABLES, "atlas_meta") if name in present]

    def table_batches(self, table: str, rows_per_batch: int) -> pa.RecordBatchReader:
        """All rows of `table`, streamed as Arrow record batches (its name is one of sql_tables())."""
        return self.con.sql(f'SELECT * FROM "{table}"').to_arrow_reader(rows_per_batch)
