"""The explanation score: do a neuron's images tell you which of two new images drives it more?

After MIS (Zimmermann et al., NeurIPS 2024), the automatic stand-in for the human task of
Borowski et al. (ICLR 2021). A trial shows two held-out images, one of the most activating for the
unit and one that drives it moderately (none of them used to make its facets); it is answered right when
the stronger one is the more similar to the reference images, similarity being the cosine of
their features under a network other than the one explained. The score is the share of trials
answered right (ties count half): 0.5 is chance, 1.0 always right. References are a method's
images of the neuron (one facet image: that facet's score), or real exemplars as the yardstick.

MIS measures similarity with DreamSim and uses both most- and least-activating references; DreamSim
does not ship offline, so the backbone is a parameter (EfficientNet-Lite2 for ImageNet models, the
second demo CNN for the demo) and only the most-activating side has references (a facet image).
Nothing here knows about stores or models: arrays in, numbers out.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REFERENCE = "exemplars"   # `method` of the scores with real exemplars as references
TRIALS = 20   # trials per neuron: its 20 most activating held-out images, each against a moderate one
# The moderate image of a trial is drawn from the held-out images ranked in this share of the top (2-10%).
# Against the least activating images every class-like picture passed (real exemplars, MFV and noise all
# 0.95-1.0 on the demo, tying on some CPUs); here real exemplars score 0.89 (fc8), 0.87 (fc7) and 0.71
# (conv2) on the demo store and noise 0.70, 0.69 and 0.61: graded, and a margin between them.
MODERATE = (0.02, 0.10)


@dataclass(frozen=True)
class Trials:
    strong: np.ndarray   # held-out indexes, one per trial
    weak: np.ndarray

    def __len__(self) -> int:
        return len(self.strong)


def make_trials(activations: np.ndarray, n: int = TRIALS, seed: int = 0, moderate: tuple = MODERATE) -> Trials:
    """Pair the n most activating held-out images with n drawn at random from those ranked in the
    `moderate` share of the top (by default 2-10%). Ties (a ReLU unit's many zeros) are broken by a
    seeded shuffle, so the order among equals is random rather than the order on disk."""
    activations = np.asarray(activations, dtype=np.float64)
    if activations.ndim != 1 or not np.isfinite(activations).all():
        raise ValueError("activations must be a finite 1-D array")
    n = min(n, len(activations) // 2)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(activations))
    order = shuffled[np.argsort(-activations[shuffled], kind="stable")]
    band = order[max(n, int(len(order) * moderate[0])):max(2 * n, int(len(order) * moderate[1]))]
    strong, weak = order[:n], rng.choice(band, size=min(n, len(band)), replace=False)
    strong = strong[:len(weak)]
    keep = activations[strong] > activations[weak]   # a pair of equals has no right answer
    return Trials(strong[keep], weak[keep])


def unit_rows(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def similarity_to(references: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Each query's cosine similarity to its nearest reference (features are rows)."""
    return (unit_rows(queries) @ unit_rows(references).T).max(1)


def choice_accuracy(references: np.ndarray, heldout: np.ndarray, trials: Trials) -> float:
    """Share of trials where the strong image is more similar to the references than the weak one
    (ties half). `heldout` holds the features of the held-out images the trials index."""
    if len(trials) == 0:
        return float("nan")
    strong = similarity_to(references, heldout[trials.strong])
    weak = similarity_to(references, heldout[trials.weak])
    return float(np.mean((strong > weak) + 0.5 * (strong == weak)))
