"""The store's tables for the SQL page, as Arrow IPC streams that DuckDB-WASM loads as tables of the same names.

Not Parquet: DuckDB-WASM reads Parquet through its parquet extension, which it would fetch from a CDN when a
page first needs it, and an exported site must work offline. Arrow IPC it reads with what it has built in.
Each table is split into pieces of about PIECE_BYTES, each a complete stream (schema and batches), so no one
file is large and the page can show progress; it creates every table from its schema alone (<table>-schema.arrow)
and loads the rows of only the tables a query names.
"""
from __future__ import annotations

import pyarrow as pa

from .files import SiteFiles
from .reads import StoreReader

PIECE_BYTES = 16 << 20
ROWS_PER_BATCH = 2048
FOLDER = "data/sql"


def export_tables(reader: StoreReader, files: SiteFiles, on_table=None) -> dict:
    """Write every table a visitor can query; returns the SQL page's index (table -> pieces, rows, bytes)."""
    tables = {}
    for name in reader.sql_tables():
        tables[name] = _write_table(files, name, reader.table_batches(name, ROWS_PER_BATCH))
        if on_table:
            on_table()
    return tables


def _write_table(files: SiteFiles, name: str, batches: pa.RecordBatchReader) -> dict:
    """The table's schema alone (a few hundred bytes: the page creates every table from these at once, so
    SHOW TABLES and DESCRIBE see them all), then its rows in pieces."""
    schema, _ = _write_piece(files, f"{name}-schema", None, batches.schema, [])
    pieces, rows, current, size = [], 0, [], 0
    for batch in batches:
        current.append(batch)
        rows += batch.num_rows
        size += batch.nbytes
        if size >= PIECE_BYTES:
            pieces.append(_write_piece(files, name, len(pieces), batches.schema, current))
            current, size = [], 0
    if current:
        pieces.append(_write_piece(files, name, len(pieces), batches.schema, current))
    return {"schema": schema, "pieces": [piece for piece, _ in pieces], "rows": rows,
            "bytes": sum(size for _, size in pieces)}


def _write_piece(files: SiteFiles, table: str, number: int | None, schema: pa.Schema, batches: list) -> tuple[str, int]:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    data = sink.getvalue().to_pybytes()
    name = f"{FOLDER}/{table}.arrow" if number is None else f"{FOLDER}/{table}-{number}.arrow"
    files.write_bytes(name, data)
    return name, len(data)
