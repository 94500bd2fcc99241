"""Score every image of a store's runs with the explanation score (precompute.evidence.explain).

For each neuron of each run: its trials from the held-out images (the demo: Fashion-MNIST's test
split; other models: a folder given with --heldout), the features of its images and of the trial
images under the backbone, and a score per facet image and for all its images together. MFV runs
also get the same scores with real exemplars as references (the exemplar nearest each facet's
centroid), method 'exemplars': the yardstick synthesized images are read against.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import AtlasError
from ..engine.activations import _unit_scores
from ..engine.images import from_png
from ..engine.models import ModelSpec, load_model
from . import explain

BATCH = 256


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


def load_backbone(name: str, progress) -> ModelSpec:
    if name == "demo-seed1":
        from ..demo.train import TRANSFER_WEIGHTS, ensure_transfer_weights
        ensure_transfer_weights(progress=progress)
        return load_model("demo", TRANSFER_WEIGHTS)
    return load_model(name)


@torch.no_grad()
def features(backbone: ModelSpec, pixels: torch.Tensor, device) -> np.ndarray:
    """Global features of images under the backbone (its embedding layer, spatially averaged),
    images resized and given the backbone's channels first."""
    net = backbone.extractor((backbone.embedding_node,))
    channels, size = backbone.input_shape[0], tuple(backbone.input_shape[1:])
    out = []
    for start in range(0, len(pixels), BATCH):
        batch = pixels[start:start + BATCH].to(device)
        if batch.shape[1] != channels:
            batch = batch.mean(1, keepdim=True).expand(-1, channels, -1, -1)
        if tuple(batch.shape[-2:]) != size:
            batch = F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
        found = net(backbone.preprocess(batch))[backbone.embedding_node].float()
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


def score_runs(con, runs: dict[str, dict], spec: ModelSpec, layers: list[str], training_images, heldout,
               description: str, backbone_name: str, device, progress, trials: int = explain.TRIALS,
               seed: int = 0) -> list[dict]:
    """Score rows for every image of every run (and the exemplar references of the MFV run)."""
    backbone = load_backbone(backbone_name, progress).to(device)
    progress("score: held-out images", 0, 1)
    acts = unit_activations(spec, heldout, layers, device)
    heldout_features = features(backbone, heldout_pixels(heldout), device)
    progress("score: held-out images", 1, 1)
    context = {"trials": trials, "seed": seed, "backbone": backbone_name, "heldout": description}
    rows = []
    for done, layer in enumerate(layers, 1):
        for method, run in runs.items():
            found = con.execute("SELECT unit, facet, image_png FROM facets WHERE run_id = ? AND layer = ? "
                                "ORDER BY unit, facet", [run["run_id"], layer]).fetchall()
            if not found:
                continue
            pixels = torch.stack([from_png(png) for *_, png in found])
            rows += score_images(run, method, layer, np.array([r[0] for r in found]), np.array([r[1] for r in found]),
                                 features(backbone, pixels, device), acts[layer], heldout_features, context)
        if "mfv" in runs and training_images is not None:
            rows += exemplar_rows(con, runs["mfv"], layer, training_images, backbone, acts[layer],
                                  heldout_features, context, device)
        progress("score: layers", done, len(layers))
    return rows


def exemplar_rows(con, run: dict, layer: str, training_images, backbone: ModelSpec, acts: np.ndarray,
                  heldout_features: np.ndarray, context: dict, device) -> list[dict]:
    """The yardstick: scores with the real exemplar nearest each MFV facet's centroid as references."""
    found = con.execute("""SELECT unit, facet, image_id FROM exemplars
                           WHERE run_id = ? AND layer = ? AND rank_in_facet = 0 ORDER BY unit, facet""",
                        [run["run_id"], layer]).fetchall()
    if not found:
        return []
    pixels = training_images.pixels(torch.tensor([r[2] for r in found]))
    return score_images(run, explain.REFERENCE, layer, np.array([r[0] for r in found]), np.array([r[1] for r in found]),
                        features(backbone, pixels, device), acts, heldout_features, context)
