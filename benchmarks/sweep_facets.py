"""Does synthesis keep each facet? Candidate MFV syntheses from the committed demo store's facet inits.

    python benchmarks/sweep_facets.py [--store data/demo] [--units 16] [--out docs/sweeps/facets.md]

Every candidate renders the same inits (the stored MFV run's, fc8 all units, fc7 and fc6 the first
`--units` live units) and is measured as docs/synthesis.md ("Facets that stay facets") defines:
retention in pixels and in the second demo CNN's conv2 features (chance 1/k), spread (images' mean
pairwise distance / the inits'), gain (activation / the neuron's strongest real exemplar), top-1
under the second network (fc8), clipped pixels, seconds. Prints one Markdown table.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from precompute.core.store import READ_ONLY_CONFIG, Store  # noqa: E402
from precompute.engine.images import from_png  # noqa: E402
from precompute.engine.synthesis import measure, render  # noqa: E402
from precompute.evidence import retention  # noqa: E402
from precompute.evidence.scoring import load_backbone  # noqa: E402
from precompute.pipeline import BuildConfig  # noqa: E402
from precompute.pipeline.plan import schedule_for  # noqa: E402
from precompute.pipeline.runtime import image_key, resolve_precision, spec_of_run  # noqa: E402

# name -> (BuildConfig overrides, schedule overrides, stop at the strongest exemplar)
CANDIDATES = {
    "init untouched (a degenerate reference)": ({"param": "fourier"}, {}, None),
    "fourier (the default before)": ({"param": "fourier"}, {}, False),
    "fourier, stop at gain 1": ({"param": "fourier"}, {}, True),
    "fourier, seed 300": ({"param": "fourier"}, {"seed_weight": 300.0}, False),
    "fourier, seed 300, stop": ({"param": "fourier"}, {"seed_weight": 300.0}, True),
    "maco, stop at gain 1": ({"param": "maco"}, {}, True),
    "pixel, paper's loop": ({"param": "pixel", "transforms": ("jitter",)}, {}, False),
    "pixel, stop at gain 1": ({"param": "pixel", "transforms": ("jitter",)}, {}, True),
    "pixel, seed 30": ({"param": "pixel", "transforms": ("jitter",)}, {"seed_weight": 30.0}, False),
    "pixel, seed 30, stop": ({"param": "pixel", "transforms": ("jitter",)}, {"seed_weight": 30.0}, True),
}


def load_inits(con, run_id: str, layers: dict[str, int]) -> list[tuple]:
    """(layer, unit, facet ids, inits, strongest exemplar activation) of the neurons swept."""
    found = []
    for layer, n in layers.items():
        units = [u for (u,) in con.execute("SELECT unit FROM neurons WHERE run_id = ? AND layer = ? AND k > 1 "
                                           "ORDER BY unit LIMIT ?", [run_id, layer, n]).fetchall()]
        for unit in units:
            rows = con.execute("SELECT facet, init_png FROM facets WHERE run_id = ? AND layer = ? AND unit = ? "
                               "ORDER BY facet", [run_id, layer, unit]).fetchall()
            best = con.execute("SELECT max(activation) FROM exemplars WHERE run_id = ? AND layer = ? AND unit = ?",
                               [run_id, layer, unit]).fetchone()[0]
            found.append((layer, unit, [f for f, _ in rows], torch.stack([from_png(p) for _, p in rows]), best))
    return found


def sweep(spec, backbone, neurons, overrides, extra, stop, seed=0) -> dict:
    config = BuildConfig(store="", **overrides)
    schedule = dataclasses.replace(schedule_for("mfv", spec, config), **extra)
    precision = resolve_precision("auto", torch.device("cpu"))
    rows, seconds = [], 0.0
    for layer in dict.fromkeys(n[0] for n in neurons):
        mine = [n for n in neurons if n[0] == layer]
        units = torch.tensor([n[1] for n in mine for _ in n[2]])
        init = torch.cat([n[3] for n in mine])
        keys = torch.tensor([image_key(seed, "mfv", layer, n[1], f) for n in mine for f in n[2]])
        targets = torch.tensor([n[4] for n in mine for _ in n[2]], dtype=torch.float32) if stop else None
        start = time.perf_counter()
        final = init if stop is None else torch.cat([render(spec, layer, units[i:i + 128], init[i:i + 128], schedule, keys[i:i + 128],
                                  precision=precision, targets=None if targets is None else targets[i:i + 128])
                           for i in range(0, len(units), 128)])
        seconds += time.perf_counter() - start
        acts = measure(spec, layer, units, final)["act"].numpy()
        with torch.no_grad():
            b_top1 = backbone.extractor((backbone.logits_layer,))(backbone.preprocess(final))[backbone.logits_layer].argmax(1)
        pix_f, pix_i = retention.pixel_vectors(final), retention.pixel_vectors(init)
        feat_f = retention.feature_vectors(backbone, "conv2", final)
        feat_i = retention.feature_vectors(backbone, "conv2", init)
        at = 0
        for _, unit, facets, _, best in mine:
            k = len(facets)
            s = slice(at, at + k)
            rows.append({"layer": layer, "ret_px": retention.retention(pix_f[s], pix_i[s]),
                         "ret_b": retention.retention(feat_f[s], feat_i[s]),
                         "spread": retention.spread(pix_f[s], pix_i[s]), "gain": float(np.median(acts[s]) / best),
                         "top1": float((b_top1[s] == unit).float().mean()) if layer == "fc8" else np.nan,
                         "clipped": retention.clipped_share(final[s].numpy())})
            at += k
    return {"rows": rows, "seconds": seconds}


def table(results: dict, layers: list[str]) -> str:
    lines = ["| candidate | " + " | ".join(f"{l} retention px / conv2-B" for l in layers)
             + " | fc8 spread | median gain | fc8 top-1 (B) | clipped | s |", "|---" * (len(layers) + 6) + "|"]
    for name, result in results.items():
        rows = result["rows"]
        med = lambda key, layer=None: float(np.nanmedian([r[key] for r in rows if layer in (None, r["layer"])]))  # noqa: E731
        cells = [f"{med('ret_px', l):.2f} / {med('ret_b', l):.2f}" for l in layers]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {med('spread', 'fc8'):.2f} | {med('gain'):.2f} | "
                     f"{np.nanmean([r['top1'] for r in rows if r['layer'] == 'fc8']):.0%} | {med('clipped'):.0%} | "
                     f"{result['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="data/demo")
    parser.add_argument("--units", type=int, default=16, help="live units of fc7 and fc6 (fc8: all)")
    parser.add_argument("--only", nargs="*", help="candidates to run (default: all)")
    args = parser.parse_args()
    torch.manual_seed(0)
    database = Store(args.store).consolidate()
    con = duckdb.connect(str(database), read_only=True, config=READ_ONLY_CONFIG)
    run = con.execute("SELECT * FROM runs WHERE method = 'mfv'").fetchdf().to_dict("records")[0]
    spec = spec_of_run(run)
    backbone = load_backbone("demo-seed1", lambda *a: None)
    layers = {"fc8": 10, "fc7": args.units, "fc6": args.units}
    neurons = load_inits(con, run["run_id"], layers)
    results = {}
    for name, (overrides, extra, stop) in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        results[name] = sweep(spec, backbone, neurons, overrides, extra, stop)
        print(f"{name}: done in {results[name]['seconds']:.0f} s", file=sys.stderr, flush=True)
    print(table(results, list(layers)))


if __name__ == "__main__":
    main()
