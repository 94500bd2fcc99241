"""The store's files: atomic parts, and a database derived from them even when the folder is read-only."""
import os

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from precompute.core.store import SCHEMA_VERSION, SCHEMAS, Store, ensure_database


def _write_some(store: Store) -> None:
    store.write("neurons", "r__fc8__00000", [{"run_id": "r", "layer": "fc8", "unit": u, "label": str(u),
                                               "status": "ok", "k": 1} for u in range(3)])
    store.write("thumbnails", "a", [{"dataset": "d", "image_id": 1, "png": b"x"}])
    store.write("thumbnails", "b", [{"dataset": "d", "image_id": 1, "png": b"x"},
                                    {"dataset": "d", "image_id": 2, "png": b"y"}])


def test_parts_are_written_atomically_with_the_schema(tmp_path):
    store = Store(tmp_path)
    _write_some(store)
    assert not list(tmp_path.rglob("*.tmp"))
    assert store.read("neurons", "r__fc8__00000")[2]["unit"] == 2
    assert store.completed_units("r") == {("fc8", 0), ("fc8", 1), ("fc8", 2)}


def test_consolidate_builds_real_tables_and_dedupes_thumbnails(tmp_path):
    store = Store(tmp_path)
    _write_some(store)
    path = store.consolidate()
    con = duckdb.connect(str(path), read_only=True)
    assert set(SCHEMAS) <= {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert con.execute("SELECT count(*) FROM neurons").fetchone() == (3,)
    assert con.execute("SELECT count(*), count(DISTINCT image_id) FROM thumbnails").fetchone() == (2, 2)


def test_thumbnails_of_an_unfinished_chunk_do_not_count(tmp_path):
    store = Store(tmp_path)
    store.write("thumbnails", "r__fc8__00000", [{"dataset": "d", "image_id": 5, "png": b"x"}])
    assert store.thumbnail_ids("d") == set()          # its neurons part was never written
    store.write("neurons", "r__fc8__00000", [])
    assert store.thumbnail_ids("d") == {5}


def test_consolidate_leaves_out_the_rows_of_an_unfinished_chunk(tmp_path):
    store = Store(tmp_path)
    _write_some(store)
    store.write("facets", "r__fc6__00000", [{"run_id": "r", "layer": "fc6", "unit": 0, "facet": 0}])
    store.write("exemplars", "r__fc6__00000", [{"run_id": "r", "layer": "fc6", "unit": 0, "image_id": 1}])
    con = duckdb.connect(str(store.consolidate()), read_only=True)
    assert con.execute("SELECT (SELECT count(*) FROM facets) + (SELECT count(*) FROM exemplars)").fetchone() == (0,)
    con.close()
    store.write("neurons", "r__fc6__00000", [{"run_id": "r", "layer": "fc6", "unit": 0, "label": "0", "status": "ok"}])
    con = duckdb.connect(str(store.consolidate()), read_only=True)
    assert con.execute("SELECT (SELECT count(*) FROM facets), (SELECT count(*) FROM exemplars)").fetchone() == (1, 1)
    con.close()


def test_ensure_database_uses_a_fresh_database_and_rebuilds_a_stale_one(tmp_path):
    store = Store(tmp_path)
    _write_some(store)
    first = ensure_database(tmp_path)
    assert first == tmp_path / "atlas.duckdb" and first.exists()
    mtime = first.stat().st_mtime
    assert ensure_database(tmp_path).stat().st_mtime == mtime       # fresh: not rebuilt
    os.utime(first, (mtime - 100, mtime - 100))                       # older than its parts
    assert ensure_database(tmp_path).stat().st_mtime > mtime - 100


def test_a_database_of_an_older_schema_is_rebuilt_with_the_new_columns(tmp_path):
    """A store consolidated before schema 4 (no facets.mean_code), with parts written before it too."""
    store = Store(tmp_path)
    _write_some(store)
    old_facet = pa.Table.from_pylist([{"run_id": "r", "layer": "fc8", "unit": 0, "facet": 0}],
                                     schema=pa.schema([f for f in SCHEMAS["facets"] if f.name != "mean_code"]))
    store.part_path("facets", "r__fc8__00000").parent.mkdir(parents=True)
    pq.write_table(old_facet, store.part_path("facets", "r__fc8__00000"))
    database = ensure_database(tmp_path)
    with duckdb.connect(str(database)) as con:   # as an older version left it
        con.execute("ALTER TABLE facets DROP COLUMN mean_code")
        con.execute("UPDATE atlas_meta SET value = '3'")
    os.utime(database)                            # and newer than every part
    ensure_database(tmp_path)
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("SELECT value FROM atlas_meta").fetchone() == (str(SCHEMA_VERSION),)
        assert con.execute("SELECT facet, mean_code FROM facets").fetchall() == [(0, None)]


def test_a_read_only_store_is_never_written_to(tmp_path, monkeypatch):
    folder, cache = tmp_path / "store", tmp_path / "cache"
    _write_some(Store(folder))
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    monkeypatch.setenv("FACET_ATLAS_CACHE", str(cache))
    monkeypatch.setattr("precompute.core.store.os.access", lambda path, mode: False)   # as on a read-only mount
    path = ensure_database(folder)
    assert path.is_relative_to(cache) and path.exists()
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert ensure_database(folder) == path                            # reused while fresh


def test_no_parts_and_no_database(tmp_path):
    assert not ensure_database(tmp_path).exists()


def test_a_finished_build_sweeps_the_temporary_files_of_killed_writers(tmp_path):
    store = Store(tmp_path)
    kept = store.write("runs", "r1", [{"run_id": "r1", "status": "complete"}])
    stale = kept.with_name(f".{kept.name}.0123abcd.tmp")   # a writer killed between write and rename
    stale.write_bytes(b"half a parquet file")
    assert store.sweep_temp_files() == 1
    assert kept.exists() and not stale.exists()
