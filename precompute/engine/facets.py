"""Facet discovery: embed a neuron's exemplars, cluster them, build each facet's init image.

As in the paper: fc7 codes -> PCA (50 dims) -> t-SNE (2-D) -> k-means (k clusters); a
facet's initialization is the mean of the m images nearest its centroid (in t-SNE space).
Clusters smaller than `min_size` (default m) are dissolved into their nearest neighbours, so a
facet is never one or two outliers and its init is always a mean of m images. Facets are
numbered by cluster size, largest first.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from ..core.errors import AtlasError
from . import tsne

PCA_DIMS = 50
MIN_TSNE = 8        # t-SNE needs perplexity < n; fewer points are embedded by their first two PCs
LARGE_SET = 1500    # more points than this: Barnes-Hut t-SNE (n log n) beats the exact batched route (n^2)
SETS_PER_BATCH = 16  # exemplar sets embedded together (half a chunk of 32): amortizes torch's per-op overhead


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
    """PCA -> t-SNE -> k-means, scikit-learn style: configure once, `fit` per neuron or `fit_many`.

    Routes (measured in BENCHMARKS.md): exemplar sets of up to LARGE_SET points, a hidden
    unit's top-N, are embedded together by the batched exact t-SNE of `tsne.py`; larger ones
    (every training image of a class) by openTSNE's Barnes-Hut t-SNE, whose cost grows as
    n log n instead of n^2.
    """

    def __init__(self, k: int = 10, m: int = 15, seed: int = 0, perplexity: float = 30.0,
                 min_size: int | None = None):
        if k < 1 or m < 1:
            raise AtlasError(f"k and m must be at least 1 (got k={k}, m={m})")
        if min_size is not None and min_size < 1:
            raise AtlasError(f"the minimum facet size must be at least 1 (got {min_size})")
        self.k, self.m, self.seed, self.perplexity = k, m, seed, perplexity
        self.min_size = m if min_size is None else min_size

    def fit(self, codes: np.ndarray) -> Facets:
        return self.fit_many([codes])[0]

    def fit_many(self, code_sets: list[np.ndarray], workers: int = 1) -> list[Facets]:
        """Facets of many neurons, spread over `workers` processes; a neuron's facets do not
        depend on `workers` or on which neurons it is batched with."""
        if workers <= 1:
            tasks = _split(code_sets)
            found = [self._fit_batch([code_sets[i] for i in task]) for task in tasks]
            return _reassemble(len(code_sets), tasks, found)
        return self.submit_many(code_sets, workers)()

    def submit_many(self, code_sets: list[np.ndarray], workers: int) -> Callable[[], list[Facets]]:
        """Start `fit_many` in the worker processes; returns a function that waits for the result."""
        tasks = _split(code_sets)
        futures = [_pool(workers).submit(self._fit_batch, [code_sets[i] for i in task]) for task in tasks]

        return lambda: _reassemble(len(code_sets), tasks, [future.result() for future in futures])

    def _fit_batch(self, code_sets: list[np.ndarray]) -> list[Facets]:
        # one thread: sums then do not depend on the core count, so a seed gives the same facets on
        # any machine with the same CPU kernels; other kernels (AVX2 against AVX-512, say) round
        # differently, and t-SNE amplifies that (docs/algorithm.md, "Reproducibility"). Parallelism comes
        # from running batches in several processes.
        with threadpool_limits(1), _torch_threads(1):
            pcas = [self._pca(_checked(codes)) for codes in code_sets]
            embeddings = self._tsne_many(pcas)
            return [self._cluster(pca, y) for pca, y in zip(pcas, embeddings)]

    def _pca(self, codes: np.ndarray) -> np.ndarray:
        dims = min(PCA_DIMS, codes.shape[0], codes.shape[1])
        if dims >= 2:
            return PCA(dims, random_state=self.seed, svd_solver="full").fit_transform(codes).astype(np.float32)
        centred = codes - codes.mean(0)   # one exemplar or one-dimensional codes: nothing to reduce
        return np.pad(centred, ((0, 0), (0, max(0, 2 - codes.shape[1]))))[:, :2]

    def _tsne_many(self, pcas: list[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(pcas)
        small = [i for i, pca in enumerate(pcas) if MIN_TSNE <= len(pca) <= LARGE_SET]
        for i, y in zip(small, tsne.embed_many([pcas[i] for i in small], self.perplexity)):
            out[i] = y.astype(np.float32)
        for i, pca in enumerate(pcas):
            if len(pca) < MIN_TSNE:   # a handful of points: the first two PCs say it all
                out[i] = np.ascontiguousarray(pca[:, :2], dtype=np.float32)
            elif len(pca) > LARGE_SET:
                out[i] = self._tsne_large(pca)
        return out

    def _tsne_large(self, pca: np.ndarray) -> np.ndarray:
        """openTSNE's Barnes-Hut t-SNE: on a class neuron's 6,000 exemplars 2.4x faster than
        scikit-learn's (18 s against 43 s on one core), mostly by its shorter, well-tuned schedule.
        Its tree is opened at theta 0.8 rather than 0.5: 11 s against 17 s, with the same
        trustworthiness on two demo classes (0.986, 0.991), and k-means facets that agree with
        theta 0.5's (adjusted Rand 0.89) more than two seeds of theta 0.5 agree (0.76)."""
        from openTSNE import TSNE
        model = TSNE(2, perplexity=self.perplexity, negative_gradient_method="bh", theta=0.8, neighbors="exact",
                     random_state=self.seed, n_jobs=1, verbose=False)
        return np.asarray(model.fit(pca), dtype=np.float32)

    def _cluster(self, pca: np.ndarray, embedding: np.ndarray) -> Facets:
        k = effective_k(len(pca), self.k, self.m)
        if k == 1:
            labels = np.zeros(len(pca), dtype=np.int64)
        else:
            labels = KMeans(k, n_init=4, random_state=self.seed).fit_predict(embedding)
            labels = dissolve_small(embedding, labels, self.min_size)
        return self._order(pca, embedding, labels)

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

    def init_members(self, facets: Facets) -> list[np.ndarray]:
        """Per facet, the (up to) m exemplars nearest its centroid: their mean is the init image."""
        return [members[: self.m] for members in facets.nearest]


def dissolve_small(points: np.ndarray, labels: np.ndarray, min_size: int) -> np.ndarray:
    """Dissolve the smallest cluster while it has fewer than `min_size` members (and more than one
    cluster is left): each of its points joins the nearest remaining centroid. k-means on a t-SNE
    map gives isolated outliers clusters of their own; as facets they would be single training
    images (measured on the demo store before this rule: 143 of 6,587 facets below m = 15, four of
    one or two images). Labels keep their ids; some ids may end up empty."""
    labels = labels.copy()
    while True:
        ids, counts = np.unique(labels, return_counts=True)
        if len(ids) < 2 or counts.min() >= min_size:
            return labels
        small = ids[np.argmin(counts)]   # ties: the lowest id, so the rule is deterministic
        kept = ids[ids != small]
        centroids = np.stack([points[labels == i].mean(0) for i in kept])
        moving = labels == small
        nearest = np.linalg.norm(points[moving][:, None] - centroids[None], axis=2).argmin(1)
        labels[moving] = kept[nearest]


def _checked(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.float32)
    if len(codes) == 0:
        raise AtlasError("cannot find facets of a neuron with no exemplars")
    return codes


def _reassemble(n: int, tasks: list[list[int]], results: list[list[Facets]]) -> list[Facets]:
    out: list[Facets | None] = [None] * n
    for task, facets in zip(tasks, results):
        for i, found in zip(task, facets):
            out[i] = found
    return out


def _split(code_sets: list[np.ndarray]) -> list[list[int]]:
    """Indices of the sets per task: every large set alone (each is many seconds of Barnes-Hut),
    the small ones in consecutive batches of SETS_PER_BATCH. The batches do not depend on
    `workers`, so the same neuron gets bit-identical facets however many processes share the work
    (a Ray worker, a local build): batched float sums can differ in the last digit with the batch."""
    large = [[i] for i, codes in enumerate(code_sets) if len(codes) > LARGE_SET]
    small = [i for i, codes in enumerate(code_sets) if len(codes) <= LARGE_SET]
    return large + [small[i:i + SETS_PER_BATCH] for i in range(0, len(small), SETS_PER_BATCH)]


@contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_POOLS: dict[int, ProcessPoolExecutor] = {}


def _pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes for `fit_many`, each single-threaded: on 2 cores, two processes of one
    thread beat one process of two threads by 1.7x for scikit-learn's t-SNE, and by far more for
    the batched t-SNE, whose many small tensor ops stall at every thread barrier when another
    process holds a core. They run at the lowest priority: a build finds the next chunks' facets
    while it synthesizes, and the synthesis threads must not wait on them at every barrier."""
    if workers not in _POOLS:   # spawned, not forked: forking a process that runs torch threads can hang
        _POOLS[workers] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                              initializer=os.nice, initargs=(19,))
    return _POOLS[workers]


@atexit.register
def _shutdown_pools() -> None:
    for pool in _POOLS.values():
        pool.shutdown(cancel_futures=True)


def facet_diversity(codes: np.ndarray, labels: np.ndarray) -> float:
    """How much of the variation among a neuron's exemplars lies between its facets: in [0, 1].

    The exemplars' fc7 codes are scaled to unit length (direction, not magnitude, says what an
    image is); the value is the between-facet sum of squares over the total sum of squares of
    those codes (the R^2 of the facet labels). 0: every facet has the same mean code; 1: every
    exemplar equals its facet's mean. Each facet counts by its size, so a facet of a few outliers
    adds only their share of the spread. Being relative to the neuron's own exemplars, it does not
    grow just because a low layer's exemplars span many classes. NULL (nan) for k = 1.
    """
    k = int(labels.max()) + 1 if len(labels) else 0
    if k < 2 or len(np.unique(labels)) < 2:
        return float("nan")
    unit = codes / np.maximum(np.linalg.norm(codes, axis=1, keepdims=True), 1e-12)
    centred = (unit - unit.mean(0)).astype(np.float64)
    total = float(np.square(centred).sum())
    if total <= 1e-12:   # identical exemplars: no spread to split
        return 0.0
    sizes = np.bincount(labels, minlength=k)
    sums = np.zeros((k, centred.shape[1]))
    np.add.at(sums, labels, centred)
    between = float((np.square(sums).sum(1) / np.maximum(sizes, 1)).sum())
    return min(1.0, max(0.0, between / total))


def diversity_null(labels: np.ndarray) -> float:
    """facet_diversity expected of random groups of the same sizes: exactly (k - 1) / (n - 1)
    for any codes (the R^2 of a random partition), so facets that mean something sit well above it."""
    k, n = len(np.unique(labels)), len(labels)
    return (k - 1) / (n - 1) if k >= 2 and n > 1 else float("nan")
