"""The site's own code (web/) and its one vendored dependency, DuckDB-WASM, copied into an export.

DuckDB-WASM is pinned in web/package.json and web/package-lock.json and installed by
`npm ci --prefix precompute/export/web`, which also runs the one build step (esbuild bundles its browser
module with the part of apache-arrow it uses). Its WebAssembly file is about 34 MB, so it is copied into
exported sites only and never committed. A site exported with --no-sql needs none of it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..core.errors import AtlasError

WEB = Path(__file__).resolve().parent / "web"
PAGES = ("index.html", "style.css", "favicon.svg", "app.js", "common.js", "charts.js", "atlas.js", "neuron.js",
         "layers.js", "sql.js")
def npm_ci() -> str:
    """The command that installs the pinned DuckDB-WASM, naming web/ from here where it can (in a checkout:
    npm ci --prefix precompute/export/web)."""
    try:
        return f"npm ci --prefix {WEB.relative_to(Path.cwd())}"
    except ValueError:    # an installed package, or run from elsewhere
        return f"npm ci --prefix {WEB}"

VENDOR = "vendor/duckdb"          # where the site keeps DuckDB-WASM
_MODULES = WEB / "node_modules"
_DUCKDB = _MODULES / "@duckdb" / "duckdb-wasm"
DUCKDB_FILES = {                  # site name -> installed file
    "duckdb.js": _MODULES / ".facet-atlas" / "duckdb.js",     # the bundle npm ci builds (package.json)
    "duckdb-browser-eh.worker.js": _DUCKDB / "dist" / "duckdb-browser-eh.worker.js",
    "duckdb-eh.wasm": _DUCKDB / "dist" / "duckdb-eh.wasm",
}
_ARROW = _MODULES / "apache-arrow"
LICENSES = "LICENSES.txt"         # beside them: whose code it is, and the licence texts the packages ship


def pinned_version() -> str:
    return json.loads((WEB / "package.json").read_text())["dependencies"]["@duckdb/duckdb-wasm"]


def check_duckdb() -> str:
    """The installed DuckDB-WASM version, or an AtlasError saying how to install the pinned one."""
    missing = [name for name, path in DUCKDB_FILES.items() if not path.is_file()]
    if missing:
        raise AtlasError(f"the SQL page needs DuckDB-WASM, which is not installed ({missing[0]} is missing): "
                         f"run {npm_ci()}, or export without SQL (--no-sql)")
    installed = json.loads((_DUCKDB / "package.json").read_text())["version"]
    if installed != pinned_version():
        raise AtlasError(f"DuckDB-WASM {installed} is installed but {pinned_version()} is pinned: run {npm_ci()}")
    return installed


def copy_pages(site: Path) -> list[str]:
    for name in PAGES:
        shutil.copyfile(WEB / name, site / name)
    return list(PAGES)


def copy_duckdb(site: Path) -> list[str]:
    """Copy DuckDB-WASM into site/vendor/duckdb/ (check_duckdb first)."""
    folder = site / VENDOR
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in DUCKDB_FILES.items():
        shutil.copyfile(path, folder / name)
    (folder / LICENSES).write_text(_licenses())
    return [f"{VENDOR}/{name}" for name in (*DUCKDB_FILES, LICENSES)]


def _licenses() -> str:
    """DuckDB-WASM ships no licence file (its package.json says MIT); apache-arrow ships its LICENSE and NOTICE."""
    arrow = json.loads((_ARROW / "package.json").read_text())["version"]
    return (f"duckdb-browser-eh.worker.js, duckdb-eh.wasm and most of duckdb.js: DuckDB-WASM {pinned_version()}, "
            "MIT licence, https://github.com/duckdb/duckdb-wasm\n"
            f"the rest of duckdb.js: Apache Arrow for JavaScript {arrow} (apache-arrow), Apache License 2.0:\n\n"
            + (_ARROW / "NOTICE.txt").read_text() + "\n" + (_ARROW / "LICENSE.txt").read_text())
