"""Image and code statistics behind the evidence (precompute.evidence.evaluate): numpy in, numbers out.

Images are float arrays C x H x W with pixels in [0, 1]; codes are fc7 vectors (rows). Nothing
here knows about models, stores or runs, so each measure can be tested on hand-made arrays.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

HIST_BINS = 32


def unit_rows(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.float64)
    return codes / np.maximum(np.linalg.norm(codes, axis=1, keepdims=True), 1e-12)


def mean_pairwise_cosine_distance(codes: np.ndarray) -> float:
    """Mean cosine distance over all pairs of rows (as precompute.engine.facets uses it); NaN below 2 rows."""
    unit = unit_rows(codes)
    n = len(unit)
    if n < 2:
        return float("nan")
    total = unit.sum(0)
    return 1.0 - (float(total @ total) - n) / (n * (n - 1))


def image_diversity(image_codes: np.ndarray, exemplar_codes: np.ndarray) -> float:
    """How different a neuron's k synthesized images are, relative to how varied its exemplars are:
    mean pairwise cosine distance of the images' codes / the same over the exemplars' codes. The
    images-level twin of facets.facet_diversity (which compares cluster centroids), so it applies
    to any method that renders several images per neuron. NaN for fewer than two images."""
    spread = mean_pairwise_cosine_distance(exemplar_codes)
    if not spread > 1e-9:
        return float("nan")
    return mean_pairwise_cosine_distance(image_codes) / spread


def centroid(codes: np.ndarray) -> np.ndarray:
    """The mean direction of a set of codes (mean of the L2-normalized rows), unit length."""
    mean = unit_rows(codes).mean(0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def cosine_distances(codes: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Rows x centres matrix of cosine distances."""
    return 1.0 - unit_rows(codes) @ unit_rows(np.atleast_2d(centres)).T


def facet_to_cluster(facet_codes: np.ndarray, exemplar_codes: np.ndarray, labels: np.ndarray):
    """For facet image i (rows of facet_codes, one per cluster): is its code nearest cluster i's
    centroid? Returns (hits: bool array, own / mean-other distance ratios: float array)."""
    k = len(facet_codes)
    centres = np.stack([centroid(exemplar_codes[labels == f]) for f in range(k)])
    dist = cosine_distances(facet_codes, centres)
    own = dist[np.arange(k), np.arange(k)]
    others = (dist.sum(1) - own) / max(k - 1, 1)
    return dist.argmin(1) == np.arange(k), own / np.maximum(others, 1e-12)


def histograms(images: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """N x (C * bins): each image's per-channel intensity histograms over [0, 1], concatenated,
    summing to 1 (one bincount for the whole batch)."""
    n, c = images.shape[:2]
    index = np.clip((images.reshape(n, c, -1) * bins).astype(np.int64), 0, bins - 1)
    index += (np.arange(n)[:, None, None] * c + np.arange(c)[None, :, None]) * bins
    counts = np.bincount(index.ravel(), minlength=n * c * bins).reshape(n, c * bins).astype(np.float64)
    return counts / np.maximum(counts.sum(1, keepdims=True), 1.0)


def chi2_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Chi-square distance between two histograms: 0.5 * sum (p - q)^2 / (p + q); 0 (same) .. 1 (disjoint)."""
    total = p + q
    mask = total > 0
    return 0.5 * float(((p[mask] - q[mask]) ** 2 / total[mask]).sum())


def deviation(image: np.ndarray) -> np.ndarray:
    """H x W: each pixel's distance from the background, taken as the per-channel median of the
    image's border (black for Fashion-MNIST items; whatever the synthesis left at the edges)."""
    ring = max(1, round(image.shape[-1] / 14))
    border = np.concatenate([image[:, :ring].reshape(len(image), -1), image[:, -ring:].reshape(len(image), -1),
                             image[:, :, :ring].reshape(len(image), -1), image[:, :, -ring:].reshape(len(image), -1)], 1)
    background = np.median(border, axis=1)[:, None, None]
    return np.sqrt(((image - background) ** 2).sum(0))


CENTRE_CHANCE = 0.25   # the central square's share of the area


def centre_share(image: np.ndarray) -> float:
    """Share of the deviation-from-background energy that lies in the central square of half the
    side (a quarter of the area, so 0.25 is what an image with no preference for the centre
    gets). NaN for an image that is all background."""
    energy = deviation(image) ** 2
    h, w = energy.shape
    total = float(energy.sum())
    if total <= 1e-12:
        return float("nan")
    return float(energy[h // 4:h - h // 4, w // 4:w - w // 4].sum()) / total


def fragment_count(image: np.ndarray) -> int:
    """How many separate salient blobs an image has: connected components (8-connected) of the
    lightly smoothed deviation map above half its 99th percentile, ignoring specks smaller than
    0.5% of the image. A single centred object gives 1; repeated fragments give many."""
    saliency = ndimage.gaussian_filter(deviation(image), sigma=max(0.5, image.shape[-1] / 56))
    peak = float(np.percentile(saliency, 99))
    if peak <= 1e-6:
        return 0
    labels, n = ndimage.label(saliency > peak / 2, structure=np.ones((3, 3)))
    if n == 0:
        return 0
    sizes = np.bincount(labels.ravel())[1:]
    return int((sizes >= max(2, 0.005 * saliency.size)).sum())
