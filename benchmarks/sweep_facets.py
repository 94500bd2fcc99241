"""Does synthesis keep each facet? Candidate MFV syntheses from a store's facet inits.

    python benchmarks/sweep_facets.py                    # the committed demo store, 28 px
    python benchmarks/sweep_facets.py --store S --heldout DIR --only ...   # any store's MFV run, e.g. 224 px

Every candidate renders the same inits (the store's MFV run's: the demo's fc8 all units, fc7 and fc6 the
first `--units` live units; another model's class neurons) and is measured as docs/synthesis.md ("Facets
that stay facets") defines: retention in pixels and in the second network's mid-level features (B: the
second demo CNN's conv2, EfficientNet-Lite2's block 10; chance 1/k), the facet score (chance 0.5), spread
(images' mean pairwise distance / the inits'), gain (activation / the neuron's strongest real exemplar),
the share of images at gain 1 (mean over neurons), top-1 under the second network (class neurons), clipped
pixels, seconds. Prints one Markdown table.
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
from precompute.engine.synthesis import facet_directions, measure, render  # noqa: E402
from precompute.evidence import facet_score, retention, scoring  # noqa: E402
from precompute.evidence.reads import codes_of  # noqa: E402
from precompute.pipeline import BuildConfig  # noqa: E402
from precompute.pipeline.plan import schedule_for  # noqa: E402
from precompute.pipeline.runtime import image_key, images_of_run, resolve_precision, spec_of_run  # noqa: E402

LUCID = ("jitter", "scale", "rotate")
REACHED = 0.999   # an image "at gain 1" drives its unit to its strongest exemplar's activation (bf16's rounding aside)
# name -> (BuildConfig overrides (facet_pull and seed_penalty 0 unless given), schedule overrides, stop: True at the strongest
# exemplar's activation, False after every step, None: the init itself, "exemplars": the real exemplar nearest each centroid instead)
CANDIDATES = {
    "real exemplars nearest each centroid (the yardstick)": ({}, {}, "exemplars"),
    "init untouched (a degenerate reference)": ({"param": "fourier", "transforms": LUCID}, {}, None),
    "fourier (the default before; at 224 px until the facet pull)": ({"param": "fourier", "transforms": LUCID}, {}, False),
    "fourier, stop at gain 1": ({"param": "fourier", "transforms": LUCID}, {}, True),
    "fourier, seed 300": ({"param": "fourier", "transforms": LUCID}, {"seed_weight": 300.0}, False),
    "fourier, seed 300, stop": ({"param": "fourier", "transforms": LUCID}, {"seed_weight": 300.0}, True),
    "maco, stop at gain 1": ({"param": "maco", "transforms": LUCID}, {}, True),
    "pixel, paper's loop": ({"param": "pixel", "transforms": ("jitter",)}, {}, False),
    "pixel, stop at gain 1": ({"param": "pixel", "transforms": ("jitter",)}, {}, True),
    "pixel, seed 30": ({"param": "pixel", "transforms": ("jitter",)}, {"seed_weight": 30.0}, False),
    "pixel, seed 30, stop": ({"param": "pixel", "transforms": ("jitter",)}, {"seed_weight": 30.0}, True),
    "pixel, seed 100, stop": ({"param": "pixel", "transforms": ("jitter",)}, {"seed_weight": 100.0}, True),
    "pixel, no jitter, every step": ({"param": "pixel", "transforms": ()}, {}, False),
    "pixel, no jitter, stop (the default before the facet pull)": ({"param": "pixel", "transforms": ()}, {}, True),
    "pixel, no jitter, no TV, stop": ({"param": "pixel", "transforms": ()}, {"stages": "no tv"}, True),
    "pixel, no jitter, seed 100, stop": ({"param": "pixel", "transforms": ()}, {"seed_weight": 100.0}, True),
    "pixel, no jitter, facet pull 0.25, stop": ({"param": "pixel", "transforms": (), "facet_pull": 0.25}, {}, True),
    "pixel, no jitter, facet pull 0.5, stop": ({"param": "pixel", "transforms": (), "facet_pull": 0.5}, {}, True),
    "pixel, no jitter, facet pull 1, stop (the default below 64 px)":
        ({"param": "pixel", "transforms": (), "facet_pull": 1.0}, {}, True),
    "pixel, no jitter, facet pull 2, stop": ({"param": "pixel", "transforms": (), "facet_pull": 2.0}, {}, True),
    "pixel, no jitter, facet pull 3, stop": ({"param": "pixel", "transforms": (), "facet_pull": 3.0}, {}, True),
    "pixel, no jitter, facet pull 5, stop": ({"param": "pixel", "transforms": (), "facet_pull": 5.0}, {}, True),
    "pixel, no jitter, facet pull 1, every step": ({"param": "pixel", "transforms": (), "facet_pull": 1.0}, {}, False),
    "pixel, jitter, facet pull 1, stop": ({"param": "pixel", "transforms": ("jitter",), "facet_pull": 1.0}, {}, True),
    "fourier, facet pull 1": ({"param": "fourier", "transforms": LUCID, "facet_pull": 1.0}, {}, False),
    "fourier, facet pull 1, stop": ({"param": "fourier", "transforms": LUCID, "facet_pull": 1.0}, {}, True),
    "fourier, facet pull 3": ({"param": "fourier", "transforms": LUCID, "facet_pull": 3.0}, {}, False),
    "fourier, facet pull 1, seed 100 (the default at 64 px and above)":
        ({"param": "fourier", "transforms": LUCID, "facet_pull": 1.0}, {"seed_weight": 100.0}, False),
    "fourier, facet pull 1, seed 300": ({"param": "fourier", "transforms": LUCID, "facet_pull": 1.0}, {"seed_weight": 300.0}, False),
}


def load_inits(con, run_id: str, layers: dict[str, int], images) -> list[tuple]:
    """(layer, unit, facet ids, inits, strongest exemplar activation, facet mean codes, the real exemplar
    nearest each facet's centroid) of the neurons swept."""
    found = []
    for layer, n in layers.items():
        units = [u for (u,) in con.execute("SELECT unit FROM neurons WHERE run_id = ? AND layer = ? AND k > 1 "
                                           "ORDER BY unit LIMIT ?", [run_id, layer, n]).fetchall()]
        for unit in units:
            rows = con.execute("SELECT facet, init_png, mean_code FROM facets WHERE run_id = ? AND layer = ? AND unit = ? "
                               "ORDER BY facet", [run_id, layer, unit]).fetchall()
            best = con.execute("SELECT max(activation) FROM exemplars WHERE run_id = ? AND layer = ? AND unit = ?",
                               [run_id, layer, unit]).fetchone()[0]
            nearest = con.execute("SELECT image_id FROM exemplars WHERE run_id = ? AND layer = ? AND unit = ? "
                                  "AND rank_in_facet = 0 ORDER BY facet", [run_id, layer, unit]).fetchall()
            found.append((layer, unit, [f for f, *_ in rows], torch.stack([from_png(p) for _, p, _ in rows]), best,
                          np.array([c for *_, c in rows]), images.pixels(torch.tensor([i for (i,) in nearest]))))
    return found


def facet_heldout(spec, backbone, facet_node: str, layers: list[str], folder: str | None) -> dict:
    """What the facet score reads of the held-out images: activations, the explained model's codes and
    the backbone's features (precompute.evidence.scoring)."""
    heldout, why = scoring.heldout_set(spec, spec.name, folder, None)
    if heldout is None:
        raise SystemExit(f"error: {why}")
    pixels = scoring.heldout_pixels(heldout)
    return {"acts": scoring.unit_activations(spec, heldout, layers, "cpu"), "codes": codes_of(spec, pixels, "cpu"),
            "features": scoring.features(backbone, pixels, "cpu", facet_node), "node": facet_node}


def facet_scores(held: dict, layer: str, unit: int, means: np.ndarray, references: np.ndarray) -> float:
    pool, labels = facet_score.pool(held["acts"][layer][:, unit], held["codes"], means)
    trials = facet_score.make_trials(labels)
    right, _ = facet_score.scores(references, held["features"][pool], trials)
    return float(right.mean()) if len(right) else np.nan


def sweep(spec, backbone, node: str, held, neurons, overrides, extra, stop, seed=0) -> dict:
    config = BuildConfig(store="", **({"facet_pull": 0.0, "seed_penalty": 0.0} | overrides))
    schedule = schedule_for("mfv", spec, config)
    if extra.get("stages") == "no tv":   # the same steps without the total-variation smoothing
        extra = extra | {"stages": tuple(dataclasses.replace(s, tv_weight=(0.0, 0.0)) for s in schedule.stages)}
    schedule = dataclasses.replace(schedule, **extra, until_exemplar=stop is True)
    precision = resolve_precision("auto", torch.device("cpu"))
    rows, seconds = [], 0.0
    for layer in dict.fromkeys(n[0] for n in neurons):
        mine = [n for n in neurons if n[0] == layer]
        units = torch.tensor([n[1] for n in mine for _ in n[2]])
        init = torch.cat([n[3] for n in mine])
        keys = torch.tensor([image_key(seed, "mfv", layer, n[1], f) for n in mine for f in n[2]])
        targets = torch.tensor([n[4] for n in mine for _ in n[2]], dtype=torch.float32)
        pulls = [facet_directions(torch.tensor(n[5], dtype=torch.float32)) for n in mine]
        pull = tuple(torch.cat(parts) for parts in zip(*pulls))
        start = time.perf_counter()
        if stop is None:
            final = init
        elif stop == "exemplars":
            final = torch.cat([n[6] for n in mine])
        else:
            final = torch.cat([render(spec, layer, units[i:i + 128], init[i:i + 128], schedule, keys[i:i + 128],
                                      precision=precision, targets=targets[i:i + 128],
                                      facet_pull=tuple(t[i:i + 128] for t in pull))
                               for i in range(0, len(units), 128)])
        seconds += time.perf_counter() - start
        acts = measure(spec, layer, units, final)["act"].numpy()
        logits = spec.layers[layer].role == "logits"
        with torch.no_grad():
            b_top1 = backbone.extractor((backbone.logits_layer,))(backbone.preprocess(final))[backbone.logits_layer].argmax(1)
        pix_f, pix_i = retention.pixel_vectors(final), retention.pixel_vectors(init)
        feat_f = retention.feature_vectors(backbone, node, final)
        feat_i = retention.feature_vectors(backbone, node, init)
        embedded = scoring.features(backbone, final, "cpu", held["node"])
        at = 0
        for _, unit, facets, _, best, means, _ in mine:
            k = len(facets)
            s = slice(at, at + k)
            rows.append({"layer": layer, "ret_px": retention.retention(pix_f[s], pix_i[s]),
                         "ret_b": retention.retention(feat_f[s], feat_i[s]),
                         "spread": retention.spread(pix_f[s], pix_i[s]), "gain": float(np.median(acts[s]) / best),
                         "reached": float(np.mean(acts[s] >= REACHED * best)),
                         "top1": float((b_top1[s] == unit).float().mean()) if logits else np.nan,
                         "clipped": retention.clipped_share(final[s].numpy()),
                         "facet": facet_scores(held, layer, unit, means, embedded[s])})
            at += k
    return {"rows": rows, "seconds": seconds}


def table(results: dict, layers: list[str]) -> str:
    first = layers[0]
    lines = ["| candidate | " + " | ".join(f"{l} retention px / B" for l in layers)
             + f" | facet score {' / '.join(layers)} | {first} spread | median gain | at gain 1 | {first} top-1 (B) | clipped | s |",
             "|---" * (len(layers) + 8) + "|"]
    for name, result in results.items():
        rows = result["rows"]
        med = lambda key, layer=None: float(np.nanmedian([r[key] for r in rows if layer in (None, r["layer"])]))  # noqa: E731
        cells = [f"{med('ret_px', l):.2f} / {med('ret_b', l):.2f}" for l in layers]
        cells.append(" / ".join(f"{np.nanmean([r['facet'] for r in rows if r['layer'] == l]):.2f}" for l in layers))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {med('spread', first):.2f} | {med('gain'):.2f} | "
                     f"{np.mean([r['reached'] for r in rows]):.0%} | "
                     f"{np.nanmean([r['top1'] for r in rows if r['layer'] == first]):.0%} | {med('clipped'):.0%} | "
                     f"{result['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="data/demo")
    parser.add_argument("--heldout", default=None, help="held-out image folder (the demo: Fashion-MNIST's test split)")
    parser.add_argument("--units", type=int, default=16, help="the demo: live units of fc7 and fc6 (fc8: all)")
    parser.add_argument("--only", nargs="*", help="candidates to run (default: all)")
    args = parser.parse_args()
    torch.manual_seed(0)
    database = Store(args.store).consolidate()
    con = duckdb.connect(str(database), read_only=True, config=READ_ONLY_CONFIG)
    run = con.execute("SELECT * FROM runs WHERE method = 'mfv'").fetchdf().to_dict("records")[0]
    spec = spec_of_run(run)
    backbone_name = scoring.default_backbone(spec)
    backbone = scoring.load_backbone(backbone_name, lambda *a: None)
    node = retention.FEATURE_NODES[spec.name]
    layers = ({"fc8": 10, "fc7": args.units, "fc6": args.units} if spec.name == "demo" else
              {spec.logits_layer: spec.layers[spec.logits_layer].n_units})
    neurons = load_inits(con, run["run_id"], layers, images_of_run(run, spec))
    held = facet_heldout(spec, backbone, scoring.facet_space(backbone_name, backbone), list(layers), args.heldout)
    results = {}
    for name, (overrides, extra, stop) in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        results[name] = sweep(spec, backbone, node, held, neurons, overrides, extra, stop)
        print(f"{name}: done in {results[name]['seconds']:.0f} s", file=sys.stderr, flush=True)
    print(table(results, list(layers)))


if __name__ == "__main__":
    main()
