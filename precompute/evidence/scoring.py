"""Score every image of a store's runs with the explanation score (precompute.evidence.explain) and
MFV's facets with the facet score (precompute.evidence.facet_score).

For each neuron of each run: its trials from the held-out images (the demo: Fashion-MNIST's test
split; other models: a folder given with --heldout), the features of its images and of the trial
images under the backbone, and a score per facet image and for all its images together. MFV runs
also get the same scores with real exemplars as references (the exemplar nearest each facet's
centroid), method 'exemplars': the yardstick synthesized images are read against.

The explanation score compares images in the backbone's embedding (its penultimate layer). The
facet score reads the layer before it where FACET_NODES names one: an embedding trained to sort
classes has shrunk what tells one facet of a class from another. On the demo, real exemplars tell
a neuron's facets apart at fc8 / fc7 / fc6 with 0.84 / 0.78 / 0.80 in relu6, against 0.81 / 0.75 /
0.78 in the embedding (relu7) and 0.62 / 0.66 / 0.65 in conv3 averaged over positions, which
loses where things are; noise scores chance in every space (docs/synthesis.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import AtlasError
from ..engine.activations import _unit_scores
from ..engine.images import from_png
from ..engine.models import ModelSpec, load_model
from . import explain, facet_score
from .reads import codes_of

BATCH = 256
FACET_NODES = {"demo-seed1": "relu6"}   # backbone -> node the facet score compares in (default: its embedding)


def heldout_set(spec: ModelSpec, model: str, heldout: str | None, data: str | None):
    """(dataset, description) of the images trials are drawn from; (None, reason) without any."""
    if heldout:
        path = Path(heldout).expanduser().resolve()
        if data and path == Path(data).expanduser().resolve():
            raise AtlasError(f"--heldout {str(path)!r} is the folder the facets were made from; "
                             "held-out images must be other images")
        from ..engine.imagefolder import FolderSet
        return FolderSet(path, size=spec.input_shape[1], channels=spec.input_shape[0]), f"folder:{path}"
    if model == "demo":
        from ..demo.data import load_fashion_mnist
        return load_fashion_mnist(train=False), "fashion-mnist-test"
    return None, "no held-out images (evaluate --heldout DIR: an image folder the store was not built from)"


def default_backbone(spec: ModelSpec) -> str:
    """The network whose features judge similarity: one other than the network explained."""
    if spec.name == "demo":
        return "demo-seed1"
    return "efficientnet-lite2" if spec.name != "efficientnet-lite2" else "efficientnet-lite0"


def facet_space(name: str, backbone: ModelSpec) -> str:
    """The node of backbone `name` the facet score compares images in."""
    return FACET_NODES.get(name, backbone.embedding_node)


def load_backbone(name: str, progress) -> ModelSpec:
    if name == "demo-seed1":
        from ..demo.train import TRANSFER_WEIGHTS, ensure_transfer_weights
        ensure_transfer_weights(progress=progress)
        return load_model("demo", TRANSFER_WEIGHTS)
    return load_model(name)


@torch.no_grad()
def features(backbone: ModelSpec, pixels: torch.Tensor, device, node: str | None = None) -> np.ndarray:
    """Global features of images under the backbone (at `node`, by default its embedding layer,
    spatially averaged), images resized and given the backbone's channels first."""
    node = node or backbone.embedding_node
    net = backbone.extractor((node,))
    channels, size = backbone.input_shape[0], tuple(backbone.input_shape[1:])
    out = []
    for start in range(0, len(pixels), BATCH):
        batch = pixels[start:start + BATCH].to(device)
        if batch.shape[1] != channels:
            batch = batch.mean(1, keepdim=True).expand(-1, channels, -1, -1)
        if tuple(batch.shape[-2:]) != size:
            batch = F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
        found = net(backbone.preprocess(batch))[node].float()
        out.append((found.mean((2, 3)) if found.dim() == 4 else found).cpu())
    return torch.cat(out).numpy() if out else np.empty((0, 0))


@torch.no_grad()
def unit_activations(spec: ModelSpec, dataset, layers: list[str], device) -> dict[str, np.ndarray]:
    """N x units per layer: what each held-out image does to each unit, read as the exemplar scan
    reads it (a conv channel at its most active position)."""
    net = spec.extractor(tuple(layers))
    found = {layer: [] for layer in layers}
    for _, pixels in dataset.batches(BATCH, device):
        outputs = net(spec.preprocess(pixels.to(device)))
        for layer in layers:
            found[layer].append(_unit_scores(outputs[layer].float()).cpu())
    return {layer: torch.cat(parts).numpy() for layer, parts in found.items()}


def heldout_pixels(dataset) -> torch.Tensor:
    return torch.cat([pixels for _, pixels in dataset.batches(BATCH)])


def neuron_rows(base: dict, references: np.ndarray, facets: np.ndarray, heldout_features: np.ndarray,
                trials: explain.Trials) -> list[dict]:
    """One row per facet (its image alone as the reference) and one for the neuron (all of them)."""
    rows = [base | {"facet": int(facet), "score": explain.choice_accuracy(references[i:i + 1], heldout_features, trials)}
            for i, facet in enumerate(facets)]
    rows.append(base | {"facet": None, "score": explain.choice_accuracy(references, heldout_features, trials)})
    return rows


def score_images(run: dict, method: str, layer: str, units: np.ndarray, facets: np.ndarray, image_features: np.ndarray,
                 acts: np.ndarray, heldout_features: np.ndarray, context: dict) -> list[dict]:
    """Score rows of one run's images of one layer; `units`/`facets` label the feature rows."""
    rows = []
    for unit in np.unique(units):
        mine = np.flatnonzero(units == unit)
        trials = explain.make_trials(acts[:, unit], context["trials"], context["seed"])
        base = {"run_id": run["run_id"], "model": run["model"], "method": method, "layer": layer, "unit": int(unit),
                "trials": len(trials), "backbone": context["backbone"], "heldout": context["heldout"],
                "seed": context["seed"]}
        rows += neuron_rows(base, image_features[mine], facets[mine], heldout_features, trials)
    return rows


@dataclass
class Scored:
    scores: list[dict]         # explanation scores (the scores table)
    facet_scores: list[dict]   # facet scores of the MFV run's facets (the facet_scores table)


def score_runs(con, runs: dict[str, dict], spec: ModelSpec, layers: list[str], training_images, heldout,
               description: str, backbone_name: str, device, progress, trials: int = explain.TRIALS,
               seed: int = 0) -> Scored:
    """Score rows for every image of every run (and the exemplar references of the MFV run), and
    facet-score rows for the MFV run's facets."""
    backbone = load_backbone(backbone_name, progress).to(device)
    facet_node = facet_space(backbone_name, backbone)
    progress("score: held-out images", 0, 1)
    acts = unit_activations(spec, heldout, layers, device)
    pixels = heldout_pixels(heldout)
    heldout_features = features(backbone, pixels, device)
    held = None if "mfv" not in runs else {"codes": codes_of(spec, pixels, device),
                                           "features": features(backbone, pixels, device, facet_node)}
    progress("score: held-out images", 1, 1)
    context = {"trials": trials, "seed": seed, "backbone": backbone_name, "heldout": description,
               "facet_space": f"{backbone_name}:{facet_node}"}
    scored = Scored([], [])
    for done, layer in enumerate(layers, 1):
        references = layer_references(con, runs, layer, training_images)
        for method, (units, facets, images) in references.items():
            run = runs.get(method, runs.get("mfv"))
            scored.scores += score_images(run, method, layer, units, facets, features(backbone, images, device),
                                          acts[layer], heldout_features, context)
        if held is not None:
            in_facet_space = {method: (units, features(backbone, images, device, facet_node))
                              for method, (units, _, images) in references.items() if method in FACET_REFERENCES}
            scored.facet_scores += facet_rows(con, runs["mfv"], layer, in_facet_space, acts[layer], held, context)
        progress("score: layers", done, len(layers))
    return scored


def layer_references(con, runs: dict[str, dict], layer: str, training_images) -> dict[str, tuple]:
    """method -> (units, facets, pixels) of its images of `layer`, and of the MFV run's exemplar references."""
    references = {}
    for method, run in runs.items():
        found = con.execute("SELECT unit, facet, image_png FROM facets WHERE run_id = ? AND layer = ? "
                            "ORDER BY unit, facet", [run["run_id"], layer]).fetchall()
        if found:
            references[method] = (np.array([r[0] for r in found]), np.array([r[1] for r in found]),
                                  torch.stack([from_png(png) for *_, png in found]))
    if "mfv" in runs and training_images is not None:
        found = exemplar_references(con, runs["mfv"], layer, training_images)
        if found is not None:
            references[explain.REFERENCE] = found
    return references


def exemplar_references(con, run: dict, layer: str, training_images):
    """The yardstick's references: (units, facets, pixels) of the real exemplar nearest each MFV
    facet's centroid; None without exemplars."""
    found = con.execute("""SELECT unit, facet, image_id FROM exemplars
                           WHERE run_id = ? AND layer = ? AND rank_in_facet = 0 ORDER BY unit, facet""",
                        [run["run_id"], layer]).fetchall()
    if not found:
        return None
    pixels = training_images.pixels(torch.tensor([r[2] for r in found]))
    return np.array([r[0] for r in found]), np.array([r[1] for r in found]), pixels


# methods whose images are facet-score references: per facet (MFV, the exemplars), or one image read as the
# reference of every facet (the data-free baselines, whose images know no facets: chance by construction of
# the trials, the floor a facet image must clear). Diversity's k images are not matched to facets, so it has none.
FACET_REFERENCES = ("mfv", explain.REFERENCE, "noise", "center-bias")


def facet_rows(con, run: dict, layer: str, references: dict, acts: np.ndarray, held: dict, context: dict) -> list[dict]:
    """Facet-score rows of the MFV run's neurons of one layer: per facet and per neuron (facet None),
    for each method of FACET_REFERENCES with images of the layer. `references`: method -> (units,
    features); `held`: the held-out images' codes (the explained model's) and features."""
    found = con.execute("""SELECT unit, list(mean_code ORDER BY facet) FROM facets
                           WHERE run_id = ? AND layer = ? AND mean_code IS NOT NULL GROUP BY unit ORDER BY unit""",
                        [run["run_id"], layer]).fetchall()
    rows = []
    for unit, means in found:
        k = len(means)
        if k < 2:
            continue
        pool, labels = facet_score.pool(acts[:, unit], held["codes"], np.array(means))
        trials = facet_score.make_trials(labels, context["seed"])
        for method in FACET_REFERENCES:
            if method not in references:
                continue
            units, image_features = references[method]
            mine = image_features[units == unit]
            if len(mine) not in (1, k):
                continue
            right, facets = facet_score.scores(np.repeat(mine, k, 0) if len(mine) == 1 else mine,
                                               held["features"][pool], trials)
            base = {"run_id": run["run_id"], "model": run["model"], "method": method, "layer": layer, "unit": int(unit),
                    "backbone": context["facet_space"], "heldout": context["heldout"], "seed": context["seed"]}
            rows += [base | {"facet": f, "score": score, "trials": n}
                     for f, (score, n) in enumerate(facet_score.per_facet(right, facets, k))]
            rows.append(base | {"facet": None, "score": float(right.mean()) if len(right) else float("nan"),
                                "trials": len(right)})
    return rows
