"""`python -m precompute export`: a store as a static site that any web host serves.

The site is built in a folder beside --out and moved into place when complete, so a failed export leaves
no half-written site and an earlier export is replaced only by a finished one. An existing --out is
replaced only when it is an earlier export (it holds MANIFEST) or empty: the user's own files are never
deleted.

    SITE/index.html …           the pages (web/), one hash route each: #/atlas, #/neuron, #/layers, #/sql
    SITE/data/atlas.json        the runs and their layers: where each layer's index and documents are
    SITE/data/<run>/<layer>/index-<n>.json   the Atlas index, PAGE_SIZE neurons a file, default order
    SITE/data/<run>/<layer>/n/<unit>.json    a Neuron page
    SITE/data/<run>/layers.json              the Layers page
    SITE/data/sql/<table>-<n>.arrow          the SQL page's tables; data/sql/tables.json lists them
    SITE/img/ab/<hash>.png      every picture, once
    SITE/vendor/duckdb/         DuckDB-WASM (not with --no-sql)
    SITE/facet-atlas-site.json  marks the folder as an export;  SITE/.nojekyll  for GitHub Pages
"""
from __future__ import annotations

import hashlib
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..core.errors import AtlasError
from ..core.sql_examples import EXAMPLES
from . import vendor
from .evidence import layers_document
from .files import SiteFiles
from .neurons import INDEX_COLUMNS, export_layer
from .reads import StoreReader, open_store
from .tables import export_tables

MANIFEST = "facet-atlas-site.json"
PAGE_SIZE = 1000          # neurons per Atlas index file: a layer of up to this many is one request
SQL_ROW_CAP = 1000        # what the SQL page returns at most, and how long a query may run
SQL_TIME_LIMIT_S = 10


@dataclass
class ExportSummary:
    site: Path
    files: int
    bytes: int
    images: int
    neurons: int
    sql: bool
    seconds: float


def export_site(store: str | Path, out: str | Path, sql: bool = True, progress=None) -> ExportSummary:
    """Write the static site of the store at `store` into the folder `out`."""
    started = time.perf_counter()
    site = Path(out).expanduser().resolve()
    check_out(site, Path(store).expanduser().resolve())
    if sql:
        vendor.check_duckdb()       # before any long work
    reader = open_store(store)
    building = site.with_name(f".{site.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        building.mkdir(parents=True)
        files = SiteFiles(building)
        neurons = _write_site(reader, files, sql, progress or (lambda *report: None))
        files.json(MANIFEST, {"generator": "facet-atlas export", "version": __version__, "store": reader.root.name,
                              "exported_at": _now(), "sql": sql, "neurons": neurons})
        _move_into_place(building, site)
    finally:
        reader.close()
        shutil.rmtree(building, ignore_errors=True)
    sizes = [path.stat().st_size for path in site.rglob("*") if path.is_file()]
    return ExportSummary(site, len(sizes), sum(sizes), files.images, neurons, sql, time.perf_counter() - started)


def check_out(site: Path, store: Path) -> None:
    """Refuse an --out that is not ours to replace, or that lies inside the store (which is only read)."""
    if site == store or store in site.parents:
        raise AtlasError(f"--out {site} is inside the store {store}; an export never writes into a store: "
                         "choose a folder outside it")
    if site.exists() and not site.is_dir():
        raise AtlasError(f"--out {site} is a file; give a folder for the site")
    if site.is_dir() and any(site.iterdir()) and not (site / MANIFEST).is_file():
        raise AtlasError(f"--out {site} exists and is not an earlier export (no {MANIFEST}); refusing to replace "
                         "its files: choose a new or empty folder")


def _move_into_place(building: Path, site: Path) -> None:
    old = site.with_name(f".{site.name}.old-{uuid.uuid4().hex[:8]}")
    if site.exists():
        site.rename(old)
    building.rename(site)
    shutil.rmtree(old, ignore_errors=True)


def _write_site(reader: StoreReader, files: SiteFiles, sql: bool, progress) -> int:
    runs = reader.mfv_runs()
    if runs.empty:
        raise AtlasError(f"the store at {reader.root} has no MFV run to show; build one with "
                         "python -m precompute build --method mfv")
    vendor.copy_pages(files.root)
    files.write_bytes(".nojekyll", b"")   # GitHub Pages: serve the files as they are (Jekyll drops _folders)
    plans = [(run, reader.layers(run["run_id"])) for run in runs.to_dict("records")]
    total = sum(reader.neuron_count(run["run_id"]) for run, _ in plans)
    done = [0]

    def one_neuron():
        done[0] += 1
        if done[0] % 25 == 0 or done[0] == total:
            progress("export neurons", done[0], total)

    catalog = [_write_run(reader, files, run, layers, f"data/{_safe(run['run_id'])}", one_neuron)
               for run, layers in plans]
    neurons = sum(layer["neurons"] for run in catalog for layer in run["layers"])
    if sql:
        _write_sql(reader, files, progress)
    files.json("data/atlas.json", {"title": "Facet Atlas", "store": reader.root.name, "exported_at": _now(),
                                   "generator": f"facet-atlas {__version__}", "sql": sql, "page_size": PAGE_SIZE,
                                   "index_columns": [*INDEX_COLUMNS, "card"], "runs": catalog})
    return neurons


def _write_run(reader: StoreReader, files: SiteFiles, run: dict, layers, folder: str, one_neuron) -> dict:
    """One run's layers (Atlas index and Neuron documents) and its Layers page; returns its catalog entry."""
    entries = []
    for layer in layers.to_dict("records"):
        layer_folder = f"{folder}/{_safe(layer['layer'])}"
        rows = export_layer(reader, files, run, layer, layer_folder, one_neuron)
        index = [files.json(f"{layer_folder}/index-{i // PAGE_SIZE}.json", rows[i:i + PAGE_SIZE])
                 for i in range(0, len(rows), PAGE_SIZE)]
        entries.append({key: layer[key] for key in ("layer", "depth", "kind", "role", "n_units", "shape")}
                       | {"neurons": len(rows), "index": index, "documents": f"{layer_folder}/n/"})
    layers_page = files.json(f"{folder}/layers.json", layers_document(reader, run))
    return {"run": run["run_id"], "model": run["model"], "dataset": run["dataset"],
            "model_sha256": run["model_sha256"], "created_at": str(run["created_at"]), "seed": run["seed"],
            "layers": entries, "layers_page": layers_page}


def _write_sql(reader: StoreReader, files: SiteFiles, progress) -> None:
    names = reader.sql_tables()
    count = [0]

    def one_table():
        count[0] += 1
        progress("export SQL tables", count[0], len(names))

    tables = export_tables(reader, files, one_table)
    vendor.copy_duckdb(files.root)
    files.json("data/sql/tables.json", {"tables": tables, "examples": {k: v.strip() for k, v in EXAMPLES.items()},
                                        "row_cap": SQL_ROW_CAP, "time_limit_s": SQL_TIME_LIMIT_S})


def _safe(name: str) -> str:
    """A run or layer name as one path segment: itself where it is plain, else with a hash of it."""
    plain = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "_"
    return plain if plain == name else f"{plain}-{hashlib.blake2b(name.encode(), digest_size=4).hexdigest()}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def summary_lines(summary: ExportSummary) -> list[str]:
    return [f"site: {summary.site}  ({summary.files:,} files, {summary.bytes / 2**20:.1f} MiB: "
            f"{summary.neurons:,} neuron pages, {summary.images:,} images"
            + (", SQL in the browser)" if summary.sql else ", no SQL page)"),
            f"serve it: python -m http.server --directory {summary.site} 8000   (then open http://localhost:8000/)"]
