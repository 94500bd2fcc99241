"""Print what the static atlas costs: export time, site size, and for pages served by a plain static file server
to headless Chromium (a fresh cache each load), the first contentful paint, the largest contentful paint, the
requests and the bytes transferred. The demo store's site, then a synthetic store of 100 layers x 1,000 neurons
(tiny images, exported with --no-sql), whose Atlas page must fetch no per-neuron file. Requests and bytes are
counted by the static file server itself (bodies, no headers), so the SQL page's DuckDB worker is counted too.

    npm ci --prefix precompute/export/web            # the SQL page's DuckDB-WASM (the demo site has SQL)
    python benchmarks/static_site.py [--layers 100 --units 1000] [--repeat 3] [--work DIR]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from precompute.core.store import SCHEMAS, Store, ensure_database  # noqa: E402
from precompute.export.serving import StaticFiles, serve  # noqa: E402
from precompute.export.site import export_site  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DEMO_PAGES = [   # (name, route, what shows that the view's content is drawn)
    ("Atlas (fc8)", "#/atlas", "article.card img.tile"),
    ("Atlas (conv3, 128 neurons)", "#/atlas?layer=conv3", "article.card img.tile"),
    ("Neuron fc8/3 (6,000 exemplars)", "#/neuron?layer=fc8&unit=3", ".facet img"),
    ("Neuron conv3/12", "#/neuron?layer=conv3&unit=12", ".facet img"),
    ("Layers", "#/layers", "svg.boxes"),
]


def synthetic_store(root: Path, layers: int, units: int, k: int = 2, exemplars: int = 10, seed: int = 0) -> Path:
    """A store of layers x units fc neurons with k facets each (every facet image and init its own 8 x 8 PNG),
    `exemplars` t-SNE points each and a shared pool of thumbnails, written with the store's own part writer."""
    rng = np.random.default_rng(seed)
    store, run_id = Store(root), "synthetic-mfv-0000000000"
    _write(store, "runs", run_id, {"run_id": [run_id], "status": ["complete"], "model": ["synthetic"],
                                   "model_sha256": ["0" * 64], "dataset": ["synthetic"], "method": ["mfv"],
                                   "config_json": ["{}"], "seed": [seed], "schema_version": [5]})
    pool = 1000
    _write(store, "thumbnails", f"{run_id}__thumbs", {"dataset": ["synthetic"] * pool, "image_id": list(range(pool)),
                                                   "png": [_png(rng) for _ in range(pool)]})
    for depth in range(layers):
        layer, part = f"layer{depth:03d}", f"{run_id}__layer{depth:03d}__00000"
        _write(store, "layers", f"{run_id}__{layer}", {"run_id": [run_id], "layer": [layer], "depth": [depth], "kind": ["fc"],
                                                       "role": ["hidden"], "n_units": [units], "shape": [str(units)]})
        unit_ids = np.repeat(np.arange(units), k)
        _write(store, "facets", part, {"run_id": [run_id] * len(unit_ids), "layer": [layer] * len(unit_ids),
                                     "unit": unit_ids.tolist(), "facet": np.tile(np.arange(k), units).tolist(),
                                     "size": [5] * len(unit_ids), "image_png": [_png(rng) for _ in unit_ids],
                                     "init_png": [_png(rng) for _ in unit_ids],
                                     "act_init": rng.random(len(unit_ids)).tolist(),
                                     "act_final": (1 + rng.random(len(unit_ids))).tolist(), "steps": [10] * len(unit_ids)})
        points = np.repeat(np.arange(units), exemplars)
        _write(store, "exemplars", part, {"run_id": [run_id] * len(points), "layer": [layer] * len(points),
                                        "unit": points.tolist(), "image_id": rng.integers(0, pool, len(points)).tolist(),
                                        "activation": rng.random(len(points)).tolist(),
                                        "tsne_x": rng.normal(size=len(points)).tolist(),
                                        "tsne_y": rng.normal(size=len(points)).tolist(),
                                        "facet": (np.arange(len(points)) % k).tolist(),
                                        "rank_in_facet": (np.arange(len(points)) // k % (exemplars // k)).tolist()})
        _write(store, "neurons", part, {"run_id": [run_id] * units, "layer": [layer] * units, "unit": list(range(units)),
                                      "label": [f"{layer}/{u}" for u in range(units)], "status": ["ok"] * units,
                                      "n_exemplars": [exemplars] * units, "k": [k] * units,
                                      "facet_diversity": rng.random(units).tolist(),
                                      "diversity_null": (rng.random(units) / 10).tolist(),
                                      "max_activation": rng.random(units).tolist(),
                                      "best_act_final": (1 + rng.random(units)).tolist()})
    ensure_database(root)
    return root


def _write(store: Store, table: str, name: str, columns: dict) -> None:
    """A part of `table` from the columns given, every other column of its schema NULL."""
    rows = len(next(iter(columns.values())))
    store.write(table, name, {field: columns.get(field, [None] * rows) for field in SCHEMAS[table].names})


def _png(rng) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


class Counting(StaticFiles):
    """The static file server's handler, counting what it serves (the page's requests and its DuckDB worker's alike)."""
    served: list[tuple[str, int]] = []

    def copyfile(self, source, outputfile):
        Counting.served.append((self.path, os.fstat(source.fileno()).st_size))
        super().copyfile(source, outputfile)


def measure(browser, url: str, ready: str) -> dict:
    """One load in a fresh context (empty cache): paints, when the view's content was drawn, and what was served."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    Counting.served = []
    page.goto(url)
    page.wait_for_function(f"(() => {{ const e = document.querySelector({json.dumps(ready)}); "
                           "return e && (e.tagName !== 'IMG' || e.complete); })()", timeout=120_000)
    shown = page.evaluate("performance.now()")
    page.wait_for_load_state("networkidle")
    paints = page.evaluate("""() => new Promise((done) => {
        const fcp = performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null;
        new PerformanceObserver((list) => done({ fcp, lcp: list.getEntries().at(-1).startTime }))
          .observe({ type: 'largest-contentful-paint', buffered: true });
        setTimeout(() => done({ fcp, lcp: null }), 2000);
    })""")
    context.close()
    served = list(Counting.served)
    return {**paints, "shown": shown, "requests": len(served), "bytes": sum(size for _, size in served),
            "documents": sum("/n/" in path for path, _ in served), "pictures": sum(path.startswith("/img/") for path, _ in served)}


def report(browser, base: str, pages, repeat: int) -> None:
    print(f"  {'page':32s} {'FCP':>7s} {'LCP':>7s} {'drawn':>7s} {'requests':>9s} {'KiB served':>11s} {'neuron docs':>12s} {'pictures':>9s}")
    measure(browser, base + pages[0][1], pages[0][2])   # warm up the browser (not the cache: each load is fresh)
    for name, route, ready in pages:
        runs = [measure(browser, base + route, ready) for _ in range(repeat)]
        med = {key: statistics.median(r[key] for r in runs) if runs[0][key] is not None else None for key in runs[0]}
        ms = lambda v: "–" if v is None else f"{v:.0f} ms"   # noqa: E731
        print(f"  {name:32s} {ms(med['fcp']):>7s} {ms(med['lcp']):>7s} {ms(med['shown']):>7s} {med['requests']:9.0f} "
              f"{med['bytes'] / 1024:11.0f} {med['documents']:12.0f} {med['pictures']:9.0f}")


def export_and_describe(store: Path, out: Path, sql: bool) -> Path:
    summary = export_site(store, out, sql=sql)
    print(f"  export: {summary.seconds:.1f} s; site: {summary.bytes / 2**20:.1f} MiB in {summary.files:,} files "
          f"({summary.neurons:,} neuron pages, {summary.images:,} images{', SQL' if sql else ', no SQL'})")
    largest = max((p for p in out.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    print(f"  largest file: {largest.relative_to(out)} ({largest.stat().st_size / 2**20:.1f} MiB)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=100, help="layers of the synthetic store (default 100)")
    parser.add_argument("--units", type=int, default=1000, help="neurons per layer (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="loads per page; the median is shown (default 3)")
    parser.add_argument("--work", help="folder for the stores and sites (default: a temporary one, removed)")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="static-site-"))
    from playwright.sync_api import sync_playwright
    try:
        print("demo store (data/demo), with SQL:")
        demo_site = export_and_describe(ROOT / "data" / "demo", work / "demo-site", sql=True)
        started = time.perf_counter()
        store = synthetic_store(work / "synthetic", args.layers, args.units)
        print(f"synthetic store: {args.layers} layers x {args.units:,} neurons, built in {time.perf_counter() - started:.0f} s; --no-sql:")
        big_site = export_and_describe(store, work / "synthetic-site", sql=False)
        last = f"layer{args.layers - 1:03d}"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
            server, base = serve(demo_site, Counting)
            print("demo pages (median of fresh loads):")
            report(browser, base, DEMO_PAGES + [("SQL (one example; DuckDB-WASM)", "#/sql?q=" + "SELECT%20count(*)%20FROM%20neurons",
                                                 "table.rows")], args.repeat)
            server.shutdown()
            server, base = serve(big_site, Counting)
            print(f"synthetic pages ({args.layers * args.units:,} neurons):")
            report(browser, base, [(f"Atlas ({last})", "#/atlas", "article.card img.tile"),
                                   (f"Atlas ({last}, page 30)", "#/atlas?page=30", "article.card img.tile"),
                                   (f"Atlas ({last}, search '7')", "#/atlas?q=7", "article.card img.tile"),
                                   (f"Neuron {last}/5", f"#/neuron?layer={last}&unit=5", ".facet img")], args.repeat)
            server.shutdown()
            browser.close()
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
