"""The atlas store: Parquet part files (the canonical record) and atlas.duckdb (their tables).

One folder is one atlas:
    <store>/parts/<table>/<run_id>__<layer>__<first unit>.parquet   written per chunk
    <store>/parts/runs/<run_id>.parquet                              one row per run
    <store>/atlas.duckdb                                             real tables, rebuilt by consolidate()
Every file is written to a temporary name and renamed, so a killed build never leaves a
half-written part. A chunk's `neurons` part is written last: it marks the chunk complete.

The parts are the record; atlas.duckdb is derived from them. A store shipped as parts only
(the committed demo store, to stay small) gets its database from `ensure_database`, inside
the store folder when it is writable and in a cache folder when it is not.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 5   # 2: the evaluations table (precompute.evidence.evaluate); 3: the scores table;
                     # 4: receptive fields, exemplar positions and crops, facet mean codes; 5: the facet_scores table
DB_NAME = "atlas.duckdb"

# How readers open a store's atlas.duckdb (the dashboard's pages and SQL, lookups): read-only with
# file, URL and extension access off, a memory limit, no spilling (temp_directory='' matters: with a
# memory limit DuckDB would otherwise spill to '<store>/atlas.duckdb.tmp', i.e. write into the
# store), and the configuration locked at connect time so no SET can undo the rest. One shared
# setting, as DuckDB allows one configuration per database file and process.
READ_ONLY_CONFIG = {
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "allow_community_extensions": False,
    "allow_persistent_secrets": False,
    "memory_limit": "512MB",
    "threads": 2,
    "temp_directory": "",
    "lock_configuration": True,
}

SCHEMAS: dict[str, pa.Schema] = {
    "runs": pa.schema([
        ("run_id", pa.string()), ("created_at", pa.timestamp("s", tz="UTC")),
        ("finished_at", pa.timestamp("s", tz="UTC")), ("status", pa.string()),
        ("model", pa.string()), ("model_sha256", pa.string()), ("dataset", pa.string()),
        ("method", pa.string()), ("config_json", pa.string()), ("seed", pa.int64()),
        ("device", pa.string()), ("code_version", pa.string()), ("seconds", pa.float64()),
        ("schema_version", pa.int32()),
    ]),
    "layers": pa.schema([
        ("run_id", pa.string()), ("layer", pa.string()), ("depth", pa.int32()), ("kind", pa.string()),
        ("role", pa.string()), ("n_units", pa.int32()), ("shape", pa.string()),
        # conv and token layers: output position (y, x) sees input rows rf_offset[0] + y * rf_stride[0] ...
        # + rf_size[0] (columns likewise; may reach past the image); NULL: fc, or the whole image
        ("rf_size", pa.list_(pa.int32())), ("rf_stride", pa.list_(pa.int32())), ("rf_offset", pa.list_(pa.int32())),
        ("rf_method", pa.string()),   # 'geometry', 'gradient' or 'whole image' (NULL: fc)
    ]),
    "neurons": pa.schema([
        ("run_id", pa.string()), ("layer", pa.string()), ("unit", pa.int32()), ("label", pa.string()),
        ("status", pa.string()), ("reason", pa.string()), ("n_exemplars", pa.int32()), ("k", pa.int32()),
        ("facet_diversity", pa.float64()), ("diversity_null", pa.float64()),
        ("max_activation", pa.float64()), ("best_act_final", pa.float64()),
        ("top_class", pa.string()), ("top_class_share", pa.float64()),
    ]),
    "facets": pa.schema([
        ("run_id", pa.string()), ("layer", pa.string()), ("unit", pa.int32()), ("facet", pa.int32()),
        ("size", pa.int32()), ("init_png", pa.binary()), ("image_png", pa.binary()),
        ("act_init", pa.float64()), ("act_final", pa.float64()), ("target_prob", pa.float64()),
        ("top1_hit", pa.bool_()), ("steps", pa.int32()),
        ("mean_code", pa.list_(pa.float32())),   # MFV: the mean embedding (fc7) code of the facet's exemplars
    ]),
    "exemplars": pa.schema([
        ("run_id", pa.string()), ("layer", pa.string()), ("unit", pa.int32()), ("image_id", pa.int64()),
        ("activation", pa.float64()), ("pca", pa.list_(pa.float32())), ("tsne_x", pa.float32()),
        ("tsne_y", pa.float32()), ("facet", pa.int32()), ("rank_in_facet", pa.int32()),
        ("dist_to_centroid", pa.float32()),
        # conv and token layers: the output position where the unit fired most on this image, and (for the
        # exemplars that have a thumbnail) the receptive-field crop around it
        ("pos_y", pa.int32()), ("pos_x", pa.int32()), ("crop_png", pa.binary()),
    ]),
    # One thumbnail per training image, shared by every neuron and run over that dataset.
    "thumbnails": pa.schema([("dataset", pa.string()), ("image_id", pa.int64()), ("png", pa.binary())]),
    # Measured evidence (python -m precompute evaluate), long format: one number per row. unit NULL:
    # an aggregate over the layer (layer set) or the whole run (layer NULL); value NULL: not
    # measurable, with the reason in `detail`.
    "evaluations": pa.schema([
        ("run_id", pa.string()), ("model", pa.string()), ("method", pa.string()), ("layer", pa.string()),
        ("unit", pa.int32()), ("metric", pa.string()), ("value", pa.float64()), ("n", pa.int64()),
        ("detail", pa.string()),
    ]),
    # The explanation score of every image (precompute.evidence.explain, written by evaluate): facet NULL is
    # the neuron scored with all its images; method 'exemplars': real exemplars as references.
    "scores": pa.schema([
        ("run_id", pa.string()), ("model", pa.string()), ("method", pa.string()), ("layer", pa.string()),
        ("unit", pa.int32()), ("facet", pa.int32()), ("score", pa.float64()), ("trials", pa.int32()),
        ("backbone", pa.string()), ("heldout", pa.string()), ("seed", pa.int64()),
    ]),
    # The facet score of every MFV facet (precompute.evidence.facet_score, written by evaluate): can the
    # reference image tell held-out images of its facet from those of the neuron's other facets? run_id: the
    # MFV run whose facets are scored; method: whose images are the references (mfv, 'exemplars', or a
    # baseline's one image read as every facet's); facet NULL: the neuron, over all its trials.
    "facet_scores": pa.schema([
        ("run_id", pa.string()), ("model", pa.string()), ("method", pa.string()), ("layer", pa.string()),
        ("unit", pa.int32()), ("facet", pa.int32()), ("score", pa.float64()), ("trials", pa.int32()),
        ("backbone", pa.string()), ("heldout", pa.string()), ("seed", pa.int64()),
    ]),
}
TABLES = tuple(SCHEMAS)
CHUNK_TABLES = ("facets", "exemplars")   # rows of a chunk's neurons: they count once its `neurons` part exists


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    def sweep_temp_files(self) -> int:
        """Delete the temporary files of part writes that never finished (a writer killed between
        writing and renaming; with Ray, also a dead driver's worker that outlived it for a moment).
        Only for a finished build: a running writer's file would go too."""
        stale = list((self.root / "parts").glob("*/.*.tmp"))
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def part_path(self, table: str, name: str) -> Path:
        return self.root / "parts" / table / f"{name}.parquet"

    def write(self, table: str, name: str, rows: list[dict] | dict[str, list]) -> Path:
        """Atomically write `rows` (a list of row dicts, or a dict of columns) as part `name` of `table`."""
        path = self.part_path(table, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        make = pa.Table.from_pydict if isinstance(rows, dict) else pa.Table.from_pylist
        pq.write_table(make(rows, schema=SCHEMAS[table]), tmp, compression="zstd")
        os.replace(tmp, path)
        return path

    def read(self, table: str, name: str) -> list[dict]:
        path = self.part_path(table, name)
        return pq.read_table(path).to_pylist() if path.exists() else []

    def completed_units(self, run_id: str) -> set[tuple[str, int]]:
        """(layer, unit) pairs whose chunk of `run_id` has been committed."""
        folder = self.root / "parts" / "neurons"
        done: set[tuple[str, int]] = set()
        for path in sorted(folder.glob(f"{run_id}__*.parquet")):
            table = pq.read_table(path, columns=["layer", "unit"])
            done.update(zip(table["layer"].to_pylist(), table["unit"].to_pylist()))
        return done

    def thumbnail_ids(self, dataset: str) -> set[int]:
        """Image ids of `dataset` with a thumbnail in a committed chunk (an unfinished chunk's part
        is rewritten when the chunk is redone, so its thumbnails do not count)."""
        ids: set[int] = set()
        for path in sorted((self.root / "parts" / "thumbnails").glob("*.parquet")):
            if not self.part_path("neurons", path.stem).exists():
                continue
            table = pq.read_table(path, columns=["dataset", "image_id"])
            ids.update(i for d, i in zip(table["dataset"].to_pylist(), table["image_id"].to_pylist()) if d == dataset)
        return ids

    def remove(self, table: str, pattern: str) -> int:
        """Delete the parts of `table` whose names match the glob `pattern`; returns how many."""
        paths = sorted((self.root / "parts" / table).glob(f"{pattern}.parquet"))
        for path in paths:
            path.unlink()
        return len(paths)

    def newest_part_mtime(self) -> float:
        return max((p.stat().st_mtime for p in (self.root / "parts").glob("*/*.parquet")), default=0.0)

    def consolidate(self, target: Path | None = None) -> Path:
        """(Re)build atlas.duckdb (or `target`) from the part files, atomically, as real tables.

        Safe while a build writes parts (a distributed build calls it as chunks finish): the facets and
        exemplars of a chunk whose `neurons` part is not written yet are left out until it is."""
        target = Path(target) if target else self.db_path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        con = duckdb.connect(str(tmp))
        try:
            for table, schema in SCHEMAS.items():
                files = sorted((self.root / "parts" / table).glob("*.parquet"))
                if table in CHUNK_TABLES:   # only finished chunks: a chunk being (re)built is not half-shown
                    files = [f for f in files if self.part_path("neurons", f.stem).exists()]
                con.register("empty_arrow", pa.Table.from_pylist([], schema=schema))
                con.execute(f"CREATE TABLE {table} AS SELECT * FROM empty_arrow")
                con.unregister("empty_arrow")
                if files:
                    listing = ", ".join(f"'{f.as_posix()}'" for f in files)
                    # by name: parts written before a column was added read it as NULL
                    source = f"read_parquet([{listing}], union_by_name = true)"
                    present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
                    columns = ", ".join(c if c in present else f"NULL AS {c}" for c in schema.names)
                    rows = f"SELECT {columns} FROM {source}"
                    if table == "thumbnails":   # two builds may have stored the same image
                        rows = f"SELECT DISTINCT ON (dataset, image_id) * FROM ({rows}) ORDER BY dataset, image_id"
                    con.execute(f"INSERT INTO {table} {rows}")
            con.execute("CREATE TABLE atlas_meta AS SELECT 'schema_version' AS key, ? AS value",
                        [str(SCHEMA_VERSION)])
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, target)
        return target


def _cache_root() -> Path:
    return Path(os.environ.get("FACET_ATLAS_CACHE", Path.home() / ".cache" / "facet-atlas"))


def ensure_database(root: str | Path) -> Path:
    """The path of an up-to-date atlas.duckdb for the store at `root`, consolidating if needed.

    Uses <root>/atlas.duckdb when it is at least as new as every part and of this schema version.
    Otherwise it rebuilds it there (a database of an older version gains the newer columns, NULL for
    the parts written before them), or, when the store folder cannot be written (a read-only mount),
    in a cache folder, so opening a store never fails for lack of a database and never writes into
    a read-only one.
    """
    store = Store(Path(root).expanduser().resolve())
    newest = store.newest_part_mtime()
    if newest == 0.0 or _current(store.db_path, newest):
        return store.db_path           # no parts: the database as it is, or none (the caller says so)
    if os.access(store.root, os.W_OK):
        try:
            return store.consolidate()
        except OSError:
            pass
    key = hashlib.sha256(str(store.root).encode()).hexdigest()[:16]
    cached = _cache_root() / "stores" / key / DB_NAME
    if _current(cached, newest):
        return cached
    return store.consolidate(cached)


def _current(database: Path, newest_part: float) -> bool:
    """Whether `database` exists, is as new as the newest part, and is of this schema version."""
    if not database.exists() or database.stat().st_mtime < newest_part:
        return False
    try:
        with duckdb.connect(str(database), read_only=True, config=dict(READ_ONLY_CONFIG)) as con:
            found = con.execute("SELECT value FROM atlas_meta WHERE key = 'schema_version'").fetchone()
    except duckdb.Error:   # not a database, or one from before atlas_meta
        return False
    return found is not None and int(found[0]) >= SCHEMA_VERSION
