"""Facet discovery: embed a neuron's exemplars, cluster them, build each facet's init image.

As in the paper: fc7 codes -> PCA (50 dims) -> t-SNE (2-D) -> k-means (k clusters); a
facet's initialization is the mean of the m images nearest its centroid (in t-SNE space).
Facets are numbered by cluster size, largest first.
"""
from __future__ import annotations

import atexit
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from .errors import AtlasError

PCA_DIMS = 50


@dataclass
class Facets:
    pca: np.ndarray          # n x d (d <= 50)
    tsne: np.ndarray         # n x 2
    labels: np.ndarray       # n, facet of each exemplar (0 = largest cluster)
    dist: np.ndarray         # n, t-SNE distance to its facet's centroid
    nearest: list[np.ndarray]   # per facet: exemplar positions ordered by distance (all members)

    @property
    def k(self) -> int:
        return len(self.nearest)

    def sizes(self) -> list[int]:
        return [len(members) for members in self.nearest]


def effective_k(n_exemplars: int, k: int, m: int) -> int:
    """k, reduced so that every facet can average about m images (at least one facet)."""
    return max(1, min(k, n_exemplars // m))


class FacetFinder:
    """PCA -> t-SNE -> k-means, scikit-learn style: configure once, `fit` per neuron."""

    def __init__(self, k: int = 10, m: int = 15, seed: int = 0, perplexity: float = 30.0):
        if k < 1 or m < 1:
            raise AtlasError(f"k and m must be at least 1 (got k={k}, m={m})")
        self.k, self.m, self.seed, self.perplexity = k, m, seed, perplexity

    def fit(self, codes: np.ndarray) -> Facets:
        # one thread: the t-SNE's sums then do not depend on how many cores the machine has,
        # so a seed gives the same facets everywhere (neurons run in parallel instead)
        with threadpool_limits(1):
            return self._fit(codes)

    def _fit(self, codes: np.ndarray) -> Facets:
        codes = np.asarray(codes, dtype=np.float32)
        n = len(codes)
        if n == 0:
            raise AtlasError("cannot find facets of a neuron with no exemplars")
        pca = self._pca(codes)
        tsne = self._tsne(pca)
        k = effective_k(n, self.k, self.m)
        if k == 1:
            labels = np.zeros(n, dtype=np.int64)
        else:
            labels = KMeans(k, n_init=4, random_state=self.seed).fit_predict(tsne)
        return self._order(pca, tsne, labels)

    def _pca(self, codes: np.ndarray) -> np.ndarray:
        dims = min(PCA_DIMS, codes.shape[0], codes.shape[1])
        if dims >= 2:
            return PCA(dims, random_state=self.seed, svd_solver="full").fit_transform(codes).astype(np.float32)
        centred = codes - codes.mean(0)   # one exemplar or one-dimensional codes: nothing to reduce
        return np.pad(centred, ((0, 0), (0, max(0, 2 - codes.shape[1]))))[:, :2]

    def _tsne(self, pca: np.ndarray) -> np.ndarray:
        n = len(pca)
        if n < 8:  # t-SNE needs perplexity < n; for a handful of points the first two PCs say it all
            return np.ascontiguousarray(pca[:, :2], dtype=np.float32)
        perplexity = min(self.perplexity, (n - 1) / 3)
        tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=self.seed,
                    learning_rate="auto", method="barnes_hut", n_jobs=1)
        return tsne.fit_transform(pca).astype(np.float32)

    def _order(self, pca, tsne, labels) -> Facets:
        ids, counts = np.unique(labels, return_counts=True)
        order = ids[np.argsort(-counts, kind="stable")]
        remap = np.empty(labels.max() + 1, dtype=np.int64)
        remap[order] = np.arange(len(order))
        labels = remap[labels]
        dist = np.zeros(len(labels), dtype=np.float32)
        nearest = []
        for facet in range(len(order)):
            members = np.flatnonzero(labels == facet)
            centroid = tsne[members].mean(0)
            d = np.linalg.norm(tsne[members] - centroid, axis=1)
            dist[members] = d
            nearest.append(members[np.argsort(d, kind="stable")])
        return Facets(pca, tsne, labels, dist, nearest)

    def fit_many(self, code_sets: list[np.ndarray], workers: int = 1) -> list[Facets]:
        """`fit` for many neurons, spread over `workers` processes (same results as one by one)."""
        if workers <= 1 or len(code_sets) < 2:
            return [self.fit(codes) for codes in code_sets]
        return list(_pool(workers).map(self.fit, code_sets))

    def init_members(self, facets: Facets) -> list[np.ndarray]:
        """Per facet, the (up to) m exemplars nearest its centroid: their mean is the init image."""
        return [members[: self.m] for members in facets.nearest]


_POOLS: dict[int, ProcessPoolExecutor] = {}


def _pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes for `fit_many`: single-threaded t-SNEs of several neurons at once beat one
    multi-threaded t-SNE at a time (1.7x on 2 cores, measured)."""
    if workers not in _POOLS:   # spawned, not forked: forking a process that runs torch threads can hang
        _POOLS[workers] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    return _POOLS[workers]


@atexit.register
def _shutdown_pools() -> None:
    for pool in _POOLS.values():
        pool.shutdown(cancel_futures=True)


def _mean_pairwise_cosine_distance(vectors: np.ndarray) -> float:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    n = len(unit)
    if n < 2:
        return 0.0
    total = unit.sum(0)
    mean_cos = (float(total @ total) - n) / (n * (n - 1))
    return 1.0 - mean_cos


def facet_diversity(codes: np.ndarray, labels: np.ndarray) -> float:
    """How different a neuron's facets are, relative to how varied its exemplars are.

    Mean pairwise cosine distance between the facets' centroid codes (mean fc7 code of each
    cluster) divided by the mean pairwise cosine distance between all exemplar codes.
    0: the facets are no more different than random halves of the exemplars would be;
    about 1: facets as different from each other as single exemplars are. NULL (nan) for k = 1.
    """
    k = int(labels.max()) + 1 if len(labels) else 0
    if k < 2:
        return float("nan")
    unit = codes / np.maximum(np.linalg.norm(codes, axis=1, keepdims=True), 1e-12)
    centroids = np.stack([unit[labels == f].mean(0) for f in range(k)])
    spread = _mean_pairwise_cosine_distance(unit)
    return float(_mean_pairwise_cosine_distance(centroids) / spread) if spread > 1e-9 else 0.0


def diversity_null(codes: np.ndarray, labels: np.ndarray, seed: int = 0, draws: int = 5) -> float:
    """facet_diversity of the same exemplars split into random groups of the same sizes."""
    rng = np.random.default_rng(seed)
    values = [facet_diversity(codes, rng.permutation(labels)) for _ in range(draws)]
    return float(np.mean(values))
