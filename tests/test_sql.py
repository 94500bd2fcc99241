"""dashboard.sql: the read-only, bounded gate for untrusted dashboard SQL.

Every test runs against a real (small) DuckDB store built in a temporary folder and goes
through the public API only. Expectations were checked against DuckDB 2.0.1's behaviour.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time

import duckdb
import pytest

from dashboard import sql
from dashboard.sql import QueryRejected, QueryTimeout, check_sql, close_all, open_readonly, run_readonly

LAYERS = ("conv2", "fc6", "fc8")
UNITS = 100                       # per layer: 300 neurons, 600 facets


def build_store(folder, units: int = UNITS):
    """Write <folder>/atlas.duckdb with neurons and facets tables, then close it."""
    folder.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(folder / "atlas.duckdb"))
    con.execute(f"""
        CREATE TABLE neurons AS
        SELECT 'run1' AS run_id, l.layer, u.range::INTEGER AS unit,
               l.layer || '/' || u.range AS label, (u.range % 10) / 10.0 AS facet_diversity
        FROM (VALUES ('conv2'), ('fc6'), ('fc8')) l(layer), range({units}) u""")
    con.execute("""
        CREATE TABLE facets AS
        SELECT run_id, layer, unit, f.range::INTEGER AS facet,
               ('\\x89PNG' || label || '#' || f.range)::BLOB AS image_png
        FROM neurons, range(2) f""")
    con.close()
    return folder


@pytest.fixture
def store(tmp_path):
    folder = build_store(tmp_path / "store")
    yield folder
    close_all()


def fingerprint(folder):
    """Everything a write would change: the folder's entries and the file's bytes and mtime."""
    db = folder / "atlas.duckdb"
    stat = db.stat()
    return sorted(os.listdir(folder)), stat.st_mtime_ns, hashlib.sha256(db.read_bytes()).hexdigest()


def table_counts(folder):
    df = run_readonly(folder, "SELECT (SELECT count(*) FROM neurons) n, (SELECT count(*) FROM facets) f, "
                              "(SELECT string_agg(table_name, ',' ORDER BY table_name) FROM duckdb_tables()) t")
    return df.iloc[0].tolist()


# --------------------------------------------------------------------------------------------
# Ordinary queries


def test_select_returns_dataframe(store):
    df = run_readonly(store, "SELECT layer, unit, label, facet_diversity FROM neurons "
                             "WHERE layer = 'fc8' AND unit < 3 ORDER BY unit")
    assert list(df.columns) == ["layer", "unit", "label", "facet_diversity"]
    assert df["label"].tolist() == ["fc8/0", "fc8/1", "fc8/2"]
    assert df["unit"].tolist() == [0, 1, 2]
    assert df["facet_diversity"].tolist() == pytest.approx([0.0, 0.1, 0.2])
    assert df.attrs["truncated"] is False


def test_blobs_come_back_as_bytes(store):
    df = run_readonly(store, "SELECT image_png FROM facets WHERE layer = 'fc6' AND unit = 7 AND facet = 1")
    assert df["image_png"].tolist() == [b"\x89PNGfc6/7#1"]


def test_params_positional_and_named(store):
    df = run_readonly(store, "SELECT count(*) AS n FROM neurons WHERE layer = ? AND unit < ?", params=["fc6", 10])
    assert df["n"].tolist() == [10]
    df = run_readonly(store, "SELECT label FROM neurons WHERE layer = $layer AND unit = $unit",
                      params={"layer": "conv2", "unit": 5})
    assert df["label"].tolist() == ["conv2/5"]


def test_bad_params_are_rejected(store):
    with pytest.raises(QueryRejected, match="[Pp]arameter"):
        run_readonly(store, "SELECT ?", params=[1, 2])


@pytest.mark.parametrize("query", ["EXPLAIN SELECT * FROM neurons", "EXPLAIN ANALYZE SELECT count(*) FROM facets",
                                   "EXPLAIN (FORMAT json) SELECT 1", "DESCRIBE neurons", "SHOW TABLES",
                                   "SUMMARIZE neurons", "FROM neurons LIMIT 2", "VALUES (1), (2)",
                                   "WITH x AS (SELECT unit FROM neurons) SELECT max(unit) FROM x",
                                   "SELECT 1 -- trailing comment\n;"])
def test_read_only_statement_kinds_allowed(store, query):
    df = run_readonly(store, query)
    assert len(df) >= 1


def test_check_sql_returns_the_statement():
    assert check_sql("  SELECT 1;  ") == "SELECT 1;"
    assert check_sql(b"SELECT 2") == "SELECT 2"


# --------------------------------------------------------------------------------------------
# Row cap


def test_row_cap_truncates(store):
    df = run_readonly(store, "SELECT * FROM range(100000)", max_rows=1000)
    assert len(df) == 1000
    assert df.attrs["truncated"] is True
    assert df["range"].tolist() == list(range(1000))


def test_row_cap_exact_fit_is_not_truncated(store):
    df = run_readonly(store, "SELECT * FROM neurons", max_rows=300)
    assert len(df) == 300 and df.attrs["truncated"] is False


def test_row_cap_does_not_materialise_huge_results(store):
    # 10^11 rows would take minutes and terabytes if fetched; streaming stops at max_rows + 1.
    start = time.monotonic()
    df = run_readonly(store, "SELECT range AS i, repeat('x', 100) AS s FROM range(100000000000)", max_rows=10)
    assert len(df) == 10 and df.attrs["truncated"] is True
    assert time.monotonic() - start < 2


def test_empty_result_keeps_columns(store):
    df = run_readonly(store, "SELECT unit, label FROM neurons WHERE false")
    assert list(df.columns) == ["unit", "label"] and len(df) == 0 and df.attrs["truncated"] is False


# --------------------------------------------------------------------------------------------
# Hostile battery: (query, a fragment of the message). {tmp} is a scratch folder outside the store.

REFUSED_BY_CHECK = [
    ("INSERT INTO neurons VALUES ('x', 'fc8', 999, 'x', 0.5)", "only SELECT queries are allowed, got INSERT"),
    ("UPDATE neurons SET label = 'pwned'", "got UPDATE"),
    ("DELETE FROM neurons", "got DELETE"),
    ("CREATE TABLE evil AS SELECT 1", "got CREATE"),
    ("CREATE TEMP TABLE evil AS SELECT 1", "got CREATE"),
    ("CREATE MACRO evil(a) AS a", "got CREATE"),
    ("DROP TABLE neurons", "got DROP"),
    ("ALTER TABLE neurons ADD COLUMN evil INTEGER", "got ALTER"),
    ("COPY neurons TO '{tmp}/leak.csv'", "got COPY"),
    ("EXPORT DATABASE '{tmp}/export'", "got EXPORT"),
    ("ATTACH '{tmp}/other.duckdb' AS other", "got ATTACH"),
    ("DETACH atlas", "got DETACH"),
    ("INSTALL httpfs", "got LOAD (INSTALL)"),
    ("LOAD httpfs", "got LOAD"),
    ("SET threads = 64", "got SET"),
    ("SET enable_external_access = true", "got SET"),
    ("SET VARIABLE secret = 1", "got SET"),
    ("RESET threads", "got SET (RESET)"),
    ("USE memory", "got SET (USE)"),
    ("PRAGMA database_list", "got PRAGMA"),
    ("CALL pragma_version()", "got CALL"),
    ("CHECKPOINT", "got CALL (CHECKPOINT)"),
    ("VACUUM", "got VACUUM"),
    ("BEGIN TRANSACTION", "got TRANSACTION"),
    ("PREPARE p AS SELECT 1", "got PREPARE"),
    ("UPDATE EXTENSIONS", "only SELECT queries are allowed"),
    ("PIVOT neurons ON layer USING count(*)", "got MULTI (PIVOT)"),
    ("SELECT 1; DROP TABLE neurons", "one statement at a time"),
    ("SELECT 1; SELECT 2", "one statement at a time"),
    ("EXPLAIN ANALYZE CREATE TABLE evil AS SELECT 1", "EXPLAIN is only allowed on a SELECT"),
    ("EXPLAIN (ANALYZE, FORMAT json) COPY neurons TO '{tmp}/leak.csv'", "EXPLAIN is only allowed on a SELECT"),
    ("EXPLAIN ANALYZE DELETE FROM neurons", "EXPLAIN is only allowed on a SELECT"),
    ("SELECT * FROM (DELETE FROM neurons RETURNING *)", "SQL syntax error"),
    ("SELEKT 1", "SQL syntax error"),
    ("", "empty query"),
    ("   \n\t ", "empty query"),
    ("-- just a comment", "empty query"),
    ("/* only a block comment */ ;", "empty query"),
    ("SELECT 1\x00; DROP TABLE neurons", "NUL"),
    ("SELECT '" + "x" * 20_000 + "'", "too long"),
    ("SELECT " + "(" * 2000 + "1" + ")" * 2000, "SQL syntax error"),
]

# These pass the statement check (they are SELECTs); DuckDB's locked configuration stops them.
REFUSED_BY_CONFIG = [
    ("SELECT * FROM read_csv('/etc/passwd')", "file system operations are disabled"),
    ("SELECT * FROM read_csv_auto('/etc/passwd')", "file system operations are disabled"),
    ("SELECT * FROM read_parquet('/etc/hostname.parquet')", "file system operations are disabled"),
    ("SELECT * FROM read_text('/etc/passwd')", "file system operations are disabled"),
    ("SELECT * FROM read_blob('/etc/shadow')", "file system operations are disabled"),
    ("SELECT * FROM read_json('/etc/passwd')", "file system operations are disabled"),
    ("SELECT * FROM glob('/etc/*')", "file system operations are disabled"),
    ("SELECT * FROM sniff_csv('/etc/passwd')", "file system operations are disabled"),
    ("SELECT * FROM read_csv('https://example.com/x.csv')", "file system operations are disabled"),
    ("SELECT * FROM read_parquet('s3://bucket/x.parquet')", "file system operations are disabled"),
    ("SELECT * FROM read_duckdb('{tmp}/other.duckdb')", "file system operations are disabled"),
    ("SELECT * FROM duckdb_extensions()", "file system operations are disabled"),
    ("SELECT * FROM enable_logging()", "configuration has been locked"),
    ("WITH gone AS (DELETE FROM neurons RETURNING *) SELECT count(*) FROM gone", "read-only mode"),
    ("SELECT * FROM query('CREATE TABLE evil AS SELECT 1')", "single SELECT statement"),
    ("SELECT getenv('HOME')", "getenv does not exist"),
    ("SELECT * FROM '/etc/passwd'", "does not exist"),
    ("SELECT nonexistent FROM neurons", "nonexistent"),
]


@pytest.fixture
def scratch(tmp_path):
    folder = tmp_path / "scratch"
    folder.mkdir()
    duckdb.connect(str(folder / "other.duckdb")).close()   # a real file the queries try to reach
    return folder


@pytest.mark.parametrize("query, message", REFUSED_BY_CHECK + REFUSED_BY_CONFIG,
                         ids=lambda v: v[:60].replace("\x00", "NUL") if isinstance(v, str) else None)
def test_hostile_query_refused_and_store_unchanged(store, scratch, query, message):
    query = query.replace("{tmp}", str(scratch))
    before, counts = fingerprint(store), table_counts(store)
    scratch_before = sorted(os.listdir(scratch))
    start = time.monotonic()
    with pytest.raises(QueryRejected) as info:
        run_readonly(store, query, timeout_s=5)
    assert time.monotonic() - start < 2, "refusals must be quick (no network, no waiting)"
    assert not isinstance(info.value, QueryTimeout)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert table_counts(store) == counts == [300, 600, "facets,neurons"]
    assert fingerprint(store) == before
    assert sorted(os.listdir(scratch)) == scratch_before


@pytest.mark.parametrize("query", [q for q, _ in REFUSED_BY_CHECK])
def test_statement_check_alone_refuses(query):
    with pytest.raises(QueryRejected):
        check_sql(query.replace("{tmp}", "/tmp/nowhere"))


@pytest.mark.parametrize("value, message", [(b"SELECT '\xff'", "not valid UTF-8"), ("SELECT '\ud800'", "not valid Unicode"),
                                            (42, "must be text"), (None, "must be text")])
def test_non_text_input_refused(value, message):
    with pytest.raises(QueryRejected, match=message):
        check_sql(value)


def test_harmless_introspection_is_allowed(store):
    """Reading a setting is fine; changing it is not (refused above)."""
    df = run_readonly(store, "SELECT current_setting('enable_external_access') AS ext, "
                             "current_setting('lock_configuration') AS locked, current_setting('threads') AS t")
    assert df.iloc[0].tolist() == [False, True, sql.THREADS]
    # Each query has a fresh cursor, and SET VARIABLE is refused, so no variable is ever visible.
    assert run_readonly(store, "SELECT getvariable('secret') AS v")["v"].isna().all()
    # Persistent secrets are off, so there is no secret store to list (or to read from disk).
    assert run_readonly(store, "SELECT count(*) AS n FROM duckdb_secrets()")["n"].tolist() == [0]


def test_memory_limit_is_reported_and_nothing_spills(store):
    before = fingerprint(store)
    with pytest.raises(QueryRejected, match="memory limit") as info:
        run_readonly(store, "SELECT list(range) FROM range(200000000)", timeout_s=10)
    assert not isinstance(info.value, QueryTimeout)
    assert fingerprint(store) == before          # no atlas.duckdb.tmp spill folder
    assert table_counts(store)[0] == 300


# --------------------------------------------------------------------------------------------
# Time limit and concurrency

RUNAWAYS = {
    "cross_join": "SELECT count(*) FROM range(1000000) a, range(1000000) b",
    "recursive_cte": "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
    "slow_stream": "SELECT range FROM range(100000000000) WHERE random() < 0",
}


@pytest.mark.parametrize("name", list(RUNAWAYS))
def test_runaway_query_times_out(store, name):
    start = time.monotonic()
    with pytest.raises(QueryTimeout, match=r"query stopped after 1 s time limit"):
        run_readonly(store, RUNAWAYS[name], timeout_s=1)
    elapsed = time.monotonic() - start
    assert 0.9 < elapsed < 3, elapsed
    assert run_readonly(store, "SELECT count(*) AS n FROM neurons")["n"].tolist() == [300]


def test_timeout_is_a_rejection():
    assert issubclass(QueryTimeout, QueryRejected)


def test_concurrent_queries_do_not_block_each_other(store):
    slow_timeout = 3.0
    kinds = ["slow"] * 6 + ["fast"] * 14
    results: dict[int, tuple] = {}
    barrier = threading.Barrier(len(kinds))
    t0 = time.monotonic()

    def worker(i, kind):
        barrier.wait()
        begin = time.monotonic()
        try:
            if kind == "slow":
                run_readonly(store, RUNAWAYS["cross_join" if i % 2 else "slow_stream"], timeout_s=slow_timeout)
                outcome = "finished"
            else:
                # Fast queries run a few at a time, starting while the slow ones are busy.
                time.sleep(0.2 + 0.02 * i)
                begin = time.monotonic()
                df = run_readonly(store, "SELECT count(*) AS n FROM facets WHERE layer = ?", params=["fc8"],
                                  timeout_s=slow_timeout)
                outcome = int(df["n"].iloc[0])
        except QueryTimeout:
            outcome = "timeout"
        results[i] = (kind, outcome, time.monotonic() - begin, time.monotonic() - t0)

    threads = [threading.Thread(target=worker, args=(i, k)) for i, k in enumerate(kinds)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(results) == len(kinds), "every query must complete"
    slow = [r for r in results.values() if r[0] == "slow"]
    fast = [r for r in results.values() if r[0] == "fast"]
    assert all(r[1] == "timeout" for r in slow)
    assert all(r[1] == 200 for r in fast)
    # The fast ones finish long before any slow one is stopped by its time limit.
    assert max(r[3] for r in fast) < slow_timeout / 2, fast
    assert max(r[2] for r in fast) < 1.0, fast
    assert all(slow_timeout - 0.1 < r[2] < slow_timeout + 2.5 for r in slow), slow


# --------------------------------------------------------------------------------------------
# The store on disk


def test_store_folder_is_never_written(store):
    """Queries leave no .wal or spill files and never touch the database file.

    Tests run as root, for whom chmod does not stop writes, so the folder is made read-only
    (that is what a non-root deployment sees) and the check is that nothing changed at all.
    """
    before = fingerprint(store)
    db = store / "atlas.duckdb"
    os.chmod(db, 0o444)
    os.chmod(store, 0o555)
    try:
        con = open_readonly(store)
        assert con.execute("SELECT count(*) FROM neurons").fetchone() == (300,)
        con.close()
        run_readonly(store, "SELECT layer, avg(facet_diversity) FROM neurons GROUP BY ALL")
        run_readonly(store, "SELECT * FROM facets ORDER BY image_png DESC", max_rows=5)
        for query in ("CREATE TEMP TABLE t AS SELECT 1", "SELECT * FROM checkpoint()",
                      "WITH gone AS (DELETE FROM neurons RETURNING *) SELECT count(*) FROM gone"):
            try:
                run_readonly(store, query)
            except QueryRejected:
                pass
        close_all()
        assert fingerprint(store) == before
    finally:
        os.chmod(store, 0o755)
        os.chmod(db, 0o644)


def test_open_readonly_is_locked_down(store):
    con = open_readonly(store)
    try:
        with pytest.raises(duckdb.Error, match="configuration has been locked"):
            con.execute("SET enable_external_access = true")
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("CREATE TABLE evil AS SELECT 1")
        settings = dict(con.execute("SELECT name, value FROM duckdb_settings() WHERE name IN "
                                    "('access_mode', 'enable_external_access', 'autoload_known_extensions', "
                                    "'autoinstall_known_extensions', 'temp_directory', 'threads')").fetchall())
        assert settings == {"access_mode": "read_only", "enable_external_access": "false",
                            "autoload_known_extensions": "false", "autoinstall_known_extensions": "false",
                            "temp_directory": "", "threads": str(sql.THREADS)}
    finally:
        con.close()


def test_missing_store_names_the_path(tmp_path):
    missing = tmp_path / "no-such-store"
    for call in (lambda: open_readonly(missing), lambda: run_readonly(missing, "SELECT 1")):
        with pytest.raises(QueryRejected, match="no atlas store at") as info:
            call()
        assert str(missing) in str(info.value)
    assert not missing.exists()


def test_close_all_picks_up_a_rebuilt_store(store, tmp_path):
    assert table_counts(store)[0] == 300
    # Rebuild the way precompute does: write elsewhere, then atomically replace the file.
    rebuilt = build_store(tmp_path / "rebuild", units=5)
    os.replace(rebuilt / "atlas.duckdb", store / "atlas.duckdb")
    close_all()
    assert table_counts(store)[0] == 15


def test_module_imports_neither_torch_nor_streamlit():
    import subprocess
    import sys
    from pathlib import Path
    code = ("import sys, dashboard.sql; "
            "assert not {'torch', 'streamlit'} & set(sys.modules), sorted({'torch', 'streamlit'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, check=True, timeout=60)
