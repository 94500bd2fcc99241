"""The facet score: does a facet's image tell that facet's inputs from the neuron's other facets?

The explanation score (explain.py) asks whether a neuron's images pick its stronger input of two;
one class picture passes it for every facet. This score asks the question MFV exists for. The
held-out images that drive a neuron most (the strongest quarter of the set) are assigned to its
facets by the rule a reverse lookup uses for any image (the facet whose mean embedding code,
facets.mean_code, is nearest the image's own code), and each facet keeps its ten strongest, so
that every facet is tested, not only the neuron's strongest. A trial pairs a held-out image of
facet i with one of another facet j of the same neuron; it is right when facet i's reference
image is the more similar to the first. Chance is 0.5; one picture used for every facet scores
about that, whatever it looks like.

Similarity is the cosine in a second network's features, centred on the mean of the neuron's
assigned held-out images: what every facet shares (the class) cancels, so only what tells facets
apart counts, as in retention.py. The references are a method's facet images, or as the yardstick
the real exemplar nearest each facet's centroid. Arrays in, numbers out.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POOL_PER_FACET = 10   # held-out images per facet in a neuron's pool: the facet's strongest
POOL_SHARE = 4        # they are drawn from the strongest 1/POOL_SHARE of the held-out set


@dataclass(frozen=True)
class FacetTrials:
    facet: np.ndarray   # per trial: the facet whose image is the reference
    same: np.ndarray    # per trial: a held-out image (pool position) of that facet
    other: np.ndarray   # per trial: a held-out image of another facet

    def __len__(self) -> int:
        return len(self.facet)


def pool(activations: np.ndarray, codes: np.ndarray, mean_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(held-out indexes, facet of each) of a neuron's pool: the held-out set's strongest quarter
    assigned to facets by `assign`, and of each facet its POOL_PER_FACET strongest images; ties
    broken by index. Per facet, so that a neuron's strongest facet does not fill the pool alone."""
    activations = np.asarray(activations, dtype=np.float64)
    strongest = np.argsort(-activations, kind="stable")[:len(activations) // POOL_SHARE]
    labels = assign(codes[strongest], mean_codes)
    keep = np.concatenate([np.flatnonzero(labels == f)[:POOL_PER_FACET] for f in range(len(mean_codes))])
    keep.sort()
    return strongest[keep], labels[keep]


def assign(codes: np.ndarray, mean_codes: np.ndarray) -> np.ndarray:
    """The facet of each image (rows of `codes`): the one whose mean code is nearest (Euclidean)."""
    codes, means = np.asarray(codes, np.float64), np.asarray(mean_codes, np.float64)
    squared = (codes ** 2).sum(1)[:, None] + (means ** 2).sum(1)[None] - 2 * codes @ means.T
    return squared.argmin(1)


def make_trials(labels: np.ndarray, seed: int = 0) -> FacetTrials:
    """Every pooled image of a facet, each paired with a random pooled image of another facet.
    Nothing for a neuron whose images all fall in one facet."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    facet, same, other = [], [], []
    for i, label in enumerate(labels):
        others = np.flatnonzero(labels != label)
        if len(others):
            facet.append(label)
            same.append(i)
            other.append(rng.choice(others))
    return FacetTrials(np.array(facet, dtype=np.int64), np.array(same, dtype=np.int64), np.array(other, dtype=np.int64))


def scores(references: np.ndarray, heldout: np.ndarray, trials: FacetTrials) -> tuple[np.ndarray, np.ndarray]:
    """(right, 1 or 0 or 0.5 for a tie, per trial; the similarities are centred on the mean of `heldout`).
    `references` has one row per facet (row f: facet f's image); `heldout` the pooled images' features."""
    if len(trials) == 0:
        return np.empty(0), np.empty(0, dtype=np.int64)
    heldout = np.asarray(heldout, np.float64).reshape(len(heldout), -1)
    centre = heldout.mean(0)
    refs = _unit(np.asarray(references, np.float64).reshape(len(references), -1) - centre)
    pooled = _unit(heldout - centre)
    similarity = pooled @ refs.T   # pooled image x facet
    same = similarity[trials.same, trials.facet]
    other = similarity[trials.other, trials.facet]
    return (same > other) + 0.5 * (same == other), trials.facet


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def per_facet(right: np.ndarray, facets: np.ndarray, k: int) -> list[tuple[float, int]]:
    """(score, trials) of each facet 0..k-1 (NaN without trials)."""
    return [(float(right[facets == f].mean()) if (facets == f).any() else float("nan"), int((facets == f).sum()))
            for f in range(k)]
