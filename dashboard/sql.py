"""The one gate through which every dashboard SQL query goes: read-only, bounded, fail-closed.

The atlas is served to strangers, so a query typed into the dashboard is untrusted input.
Three independent layers keep it harmless:

1. ``check_sql`` admits exactly one statement, and only a SELECT (or an EXPLAIN of a SELECT).
   Anything that writes, configures, attaches, loads or copies is refused before it runs.
2. ``open_readonly`` opens the store read-only with external access (files, URLs, extensions)
   disabled, a memory limit, a thread cap, no spilling to disk, and the configuration locked,
   so even a statement that slipped past the check could neither write nor reach outside.
3. ``run_readonly`` runs each query on its own cursor under a time limit and fetches at most
   ``max_rows + 1`` rows, so no query can hold a session or the process for long.

Every refusal is a ``QueryRejected`` whose message is meant to be shown to the user as is.
This module deliberately imports neither torch nor streamlit: it must stay cheap to import.

Known, accepted leaks of information (read-only, no secrets): table functions such as
``duckdb_databases()`` or ``duckdb_settings()`` reveal the store's path on the server and the
settings above. ``getenv`` does not exist in DuckDB 2.0, and ``getvariable`` only sees
variables of the query's own fresh cursor (and ``SET VARIABLE`` is refused), so it returns NULL.
"""
from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pandas as pd

from precompute.core.store import READ_ONLY_CONFIG

__all__ = [
    "QueryRejected", "QueryTimeout", "open_readonly", "check_sql", "run_readonly", "close_all",
    "DB_NAME", "MEMORY_LIMIT", "THREADS", "MAX_SQL_CHARS",
]

DB_NAME = "atlas.duckdb"        # the file inside a store folder (precompute.core.store.DB_NAME)
MEMORY_LIMIT = READ_ONLY_CONFIG["memory_limit"]   # shared by all queries on one store, not per query
THREADS = READ_ONLY_CONFIG["threads"]             # DuckDB worker threads per store
MAX_SQL_CHARS = 20_000          # longer text is refused before it reaches the parser

# Settings for every store connection: precompute.core.store's, shared so that a lookup in the same
# process can open the store too (DuckDB allows one configuration per database file and process).
_CONFIG = READ_ONLY_CONFIG

# After the deadline the watchdog keeps interrupting at this period until the query returns,
# because an interrupt that lands before DuckDB has started the query is silently lost.
_REINTERRUPT_S = 0.05

_ALLOWED = ("SELECT", "EXPLAIN")      # StatementType names


class QueryRejected(Exception):
    """A query was refused or failed; ``str(err)`` is a message fit to show the user."""


class QueryTimeout(QueryRejected):
    """The time limit interrupted the query."""


# ---------------------------------------------------------------------------------------------
# Statement check


_parser_lock = threading.Lock()
_parser: duckdb.DuckDBPyConnection | None = None


def _parse(sql: str) -> list:
    """Split ``sql`` into statements with a private in-memory connection.

    Not ``duckdb.extract_statements``: that uses the process-wide default connection, and
    DuckDB 2.0 refuses ('connection is busy') while anything else runs a query on it.
    The lock serialises parsing for the same reason; parsing capped-length text is quick.
    """
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = duckdb.connect(":memory:", config={"enable_external_access": False,
                                                         "lock_configuration": True})
        try:
            return _parser.extract_statements(sql)
        except duckdb.ParserException as err:
            raise QueryRejected(f"SQL syntax error: {_strip_prefix(_first_line(err))}") from err
        except duckdb.Error as err:
            raise QueryRejected(f"SQL not accepted: {_first_line(err)}") from err


def _type_name(stmt) -> str:
    """The statement's type name, e.g. 'INSERT'; 'UNKNOWN' where the binding has none.

    The Python binding raises ValueError for types it does not know (e.g. UPDATE EXTENSIONS
    reports 29); none of those are queries.
    """
    try:
        return stmt.type.name
    except ValueError:
        return "UNKNOWN"


def _as_text(sql) -> str:
    """Return ``sql`` as a str that is safe to hand to the parser, or refuse it."""
    if isinstance(sql, (bytes, bytearray)):
        try:
            sql = bytes(sql).decode("utf-8")
        except UnicodeDecodeError as err:
            raise QueryRejected(f"SQL is not valid UTF-8 text: {err}") from err
    if not isinstance(sql, str):
        raise QueryRejected(f"SQL must be text, got {type(sql).__name__}")
    if len(sql) > MAX_SQL_CHARS:
        raise QueryRejected(f"query too long: {len(sql):,} characters (the limit is {MAX_SQL_CHARS:,})")
    if "\x00" in sql:
        raise QueryRejected("SQL contains a NUL character")
    try:
        sql.encode("utf-8")      # lone surrogates would fail later, inside DuckDB's binding
    except UnicodeEncodeError as err:
        raise QueryRejected(f"SQL is not valid Unicode text: {err}") from err
    return sql


def _explain_target(text: str) -> str:
    """The statement an EXPLAIN wraps: the text after EXPLAIN [ANALYZE] [( options )].

    EXPLAIN wraps any statement, and EXPLAIN ANALYZE actually executes it, so the wrapped
    statement must pass the same SELECT-only test.
    """
    raw = duckdb.tokenize(text)
    tokens = []                                  # (start, kind, text) with comments dropped
    for i, (start, kind) in enumerate(raw):
        end = raw[i + 1][0] if i + 1 < len(raw) else len(text)
        if kind != duckdb.token_type.comment:
            tokens.append((start, kind, text[start:end].strip()))
    i = 1                                        # tokens[0] is EXPLAIN itself
    if i < len(tokens) and tokens[i][2].upper() in ("ANALYZE", "ANALYSE"):
        i += 1
    if i < len(tokens) and tokens[i][1] == duckdb.token_type.operator and tokens[i][2].startswith("("):
        depth = 0
        while i < len(tokens):                   # skip the parenthesised option list
            if tokens[i][1] == duckdb.token_type.operator:
                depth += tokens[i][2].count("(") - tokens[i][2].count(")")
            i += 1
            if depth <= 0:
                break
    return text[tokens[i][0]:] if i < len(tokens) else ""


def _describe(kind: str, text: str) -> str:
    """'INSERT', or 'LOAD (INSTALL)' where the type alone would puzzle the user."""
    words = [text[start:].split(None, 1)[0].upper() for start, token in duckdb.tokenize(text)
             if token == duckdb.token_type.keyword][:1]
    kind = kind.replace("_", " ")
    if words and words[0] not in (kind, "WITH"):
        return f"{kind} ({words[0]})"
    return kind


def check_sql(sql: str) -> str:
    """Validate untrusted SQL and return the text of its single statement.

    Accepted: exactly one SELECT-type statement (SELECT, WITH, VALUES, FROM-first, DESCRIBE,
    SHOW, SUMMARIZE) or an EXPLAIN [ANALYZE] of one. Raises ``QueryRejected`` otherwise.
    """
    sql = _as_text(sql)
    statements = _parse(sql)
    if not statements:
        raise QueryRejected("empty query: write a SELECT statement")
    if len(statements) > 1:
        raise QueryRejected(f"one statement at a time, please (found {len(statements)})")
    stmt = statements[0]
    kind = _type_name(stmt)
    if kind not in _ALLOWED:
        raise QueryRejected(f"only SELECT queries are allowed, got {_describe(kind, stmt.query)}")
    if kind == "EXPLAIN":
        inner = _parse(_explain_target(stmt.query))
        if len(inner) != 1 or _type_name(inner[0]) != "SELECT":
            raise QueryRejected("EXPLAIN is only allowed on a SELECT query")
    return stmt.query.strip()


# ---------------------------------------------------------------------------------------------
# Connections


def _db_path(database) -> Path:
    """A store folder's ``atlas.duckdb``, or a database file given directly (a copy in a cache)."""
    path = Path(database).expanduser().resolve()
    return path if path.suffix == ".duckdb" else path / DB_NAME


def open_readonly(database) -> duckdb.DuckDBPyConnection:
    """Open ``<database>/atlas.duckdb`` (or a ``.duckdb`` file) read-only and locked down (see ``_CONFIG``).

    Writes nothing into the store folder: no WAL (read-only) and no spill files.
    Raises ``QueryRejected`` naming the path if there is no store there.
    """
    path = _db_path(database)
    if not path.is_file():
        raise QueryRejected(f"no atlas store at {path} ({DB_NAME} not found); build one first")
    try:
        return duckdb.connect(str(path), read_only=True, config=dict(_CONFIG))
    except duckdb.Error as err:
        raise QueryRejected(f"cannot open atlas store {path}: {_first_line(err)}") from err


_cache_lock = threading.Lock()
_connections: dict[Path, duckdb.DuckDBPyConnection] = {}


def cursor_for(database) -> duckdb.DuckDBPyConnection:
    """A fresh cursor on the cached connection for this store (opened on first use).

    Cursors are separate DuckDB connections to one database instance, so queries on different
    cursors run side by side; creating one is done under the lock because a Python connection
    object refuses concurrent calls.
    """
    path = _db_path(database)
    with _cache_lock:
        con = _connections.get(path)
        if con is None:
            con = _connections[path] = open_readonly(path)
        return con.cursor()


def close_all() -> None:
    """Forget every cached connection, e.g. after a store was rebuilt in place.

    Queries already running keep their cursor; a connection that is still busy cannot be
    closed now and is closed by the garbage collector once its last query finishes.
    """
    with _cache_lock:
        connections = list(_connections.values())
        _connections.clear()
        for con in connections:
            try:
                con.close()
            except duckdb.Error:
                pass


# ---------------------------------------------------------------------------------------------
# Running


class _Watchdog:
    """Interrupts one cursor once ``timeout_s`` has passed, until the guarded block exits.

    A thread rather than a one-shot ``threading.Timer`` so that it can repeat the interrupt:
    one that arrives just before DuckDB starts the query is lost. ``cursor.interrupt()`` is
    used because ``connection.interrupt()`` does not reach a query running on a cursor.
    """

    def __init__(self, cursor, timeout_s: float):
        self.fired = False
        self._cursor = cursor
        self._timeout_s = timeout_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="sql-watchdog", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._done.set()
        self._thread.join()      # never interrupt a cursor after the caller closed it
        return False

    def _watch(self):
        if self._done.wait(self._timeout_s):
            return
        self.fired = True
        while True:
            try:
                self._cursor.interrupt()
            except duckdb.Error:          # cursor already closed: nothing left to stop
                return
            if self._done.wait(_REINTERRUPT_S):
                return


def run_readonly(database, sql: str, timeout_s: float = 5.0, max_rows: int = 10_000,
                 params=None) -> pd.DataFrame:
    """Check and run one untrusted query on the store; return at most ``max_rows`` rows.

    ``df.attrs["truncated"]`` tells whether the result had more rows than ``max_rows``.
    ``params`` (a list for ``?`` or a dict for ``$name``) are bound by DuckDB, not formatted in.
    Raises ``QueryTimeout`` when the time limit stopped the query and ``QueryRejected`` for
    anything else that went wrong, with DuckDB's own message where it has one.
    """
    if not timeout_s > 0:
        raise ValueError("timeout_s must be positive")
    if max_rows < 0:
        raise ValueError("max_rows must be >= 0")
    text = check_sql(sql)
    cursor = cursor_for(database)
    try:
        names, rows = _execute(cursor, text, params, timeout_s, max_rows + 1)
    finally:
        cursor.close()
    frame = pd.DataFrame(rows[:max_rows], columns=names)
    frame.attrs["truncated"] = len(rows) > max_rows
    return frame


def _execute(cursor, text: str, params, timeout_s: float, limit: int) -> tuple[list, list]:
    """Run ``text`` on ``cursor`` under the time limit; return column names and <= limit rows.

    The result streams, so ``fetchmany`` materialises only the rows it returns.
    """
    dog = _Watchdog(cursor, timeout_s)
    try:
        with dog:
            cursor.execute(text, params)
            names = [column[0] for column in cursor.description]
            rows = cursor.fetchmany(limit)
    except duckdb.InterruptException as err:
        raise QueryTimeout(f"query stopped after {timeout_s:g} s time limit") from err
    except duckdb.OutOfMemoryException as err:
        raise QueryRejected(f"query ran out of memory (the memory limit is {MEMORY_LIMIT}, "
                            "shared by all queries); filter more or aggregate") from err
    except duckdb.Error as err:
        if dog.fired:
            raise QueryTimeout(f"query stopped after {timeout_s:g} s time limit") from err
        raise QueryRejected(_first_line(err)) from err
    return names, rows


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__


def _strip_prefix(message: str) -> str:
    """'Parser Error: syntax error at ...' -> 'syntax error at ...'."""
    head, sep, rest = message.partition(": ")
    return rest if sep and head.endswith("Error") else message
