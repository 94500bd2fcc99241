import numpy as np
import pytest

from precompute.core.errors import AtlasError
from precompute.engine.facets import FacetFinder, diversity_null, effective_k, facet_diversity

pytestmark = pytest.mark.numerics   # run again under other CPU kernels (conftest)


def blobs(n_per=40, k=4, dim=64, seed=0):
    """k well-separated groups of non-negative codes (like post-ReLU fc7)."""
    rng = np.random.default_rng(seed)
    centres = rng.random((k, dim)) * (rng.random((k, dim)) < 0.3) * 5
    codes = np.concatenate([np.abs(c + rng.normal(0, 0.3, (n_per, dim))) for c in centres])
    truth = np.repeat(np.arange(k), n_per)
    return codes.astype(np.float32), truth


def test_shapes_and_ordering():
    codes, _ = blobs()
    facets = FacetFinder(k=4, m=15, seed=0).fit(codes)
    assert facets.pca.shape == (160, 50)
    assert facets.tsne.shape == (160, 2)
    assert facets.labels.shape == (160,) and facets.k == 4
    sizes = facets.sizes()
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == 160   # facet 0 is the largest


def test_clusters_recover_separated_groups():
    codes, truth = blobs()
    labels = FacetFinder(k=4, m=15, seed=0).fit(codes).labels
    # every found facet is (almost) pure: one true group each
    for facet in range(4):
        members = truth[labels == facet]
        assert np.bincount(members).max() / len(members) > 0.95


def test_deterministic_for_a_seed():
    codes, _ = blobs()
    a = FacetFinder(k=4, seed=3).fit(codes)
    b = FacetFinder(k=4, seed=3).fit(codes)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.tsne, b.tsne)


def test_init_members_are_the_m_nearest_to_the_centroid():
    codes, _ = blobs()
    finder = FacetFinder(k=4, m=15, seed=0)
    facets = finder.fit(codes)
    for facet, chosen in enumerate(finder.init_members(facets)):
        members = np.flatnonzero(facets.labels == facet)
        centroid = facets.tsne[members].mean(0)
        dist = np.linalg.norm(facets.tsne[members] - centroid, axis=1)
        expected = set(members[np.argsort(dist)[:15]])
        assert len(chosen) == 15 and set(chosen) == expected
        np.testing.assert_allclose(facets.dist[chosen], np.sort(dist)[:15], rtol=1e-5)


def test_k_shrinks_for_small_exemplar_sets():
    assert effective_k(300, 10, 15) == 10
    assert effective_k(40, 10, 15) == 2
    assert effective_k(3, 10, 15) == 1
    codes, _ = blobs(n_per=5, k=1)
    facets = FacetFinder(k=10, m=15).fit(codes)
    assert facets.k == 1 and set(facets.labels) == {0}


def test_single_exemplar():
    facets = FacetFinder(k=10).fit(np.ones((1, 8), np.float32))
    assert facets.k == 1 and facets.tsne.shape == (1, 2)


def test_rejects_bad_settings_and_empty_sets():
    with pytest.raises(AtlasError, match="k and m"):
        FacetFinder(k=0)
    with pytest.raises(AtlasError, match="no exemplars"):
        FacetFinder().fit(np.zeros((0, 4)))


def test_facet_diversity_separates_real_facets_from_random_splits():
    codes, truth = blobs()
    real = facet_diversity(codes, truth)
    null = diversity_null(truth)
    assert real > 0.8 and null == pytest.approx(3 / 159)
    # one group split in two is far less diverse than four different groups
    one_group = codes[truth == 0]
    halves = np.arange(len(one_group)) % 2
    assert facet_diversity(one_group, halves) < 0.1
    assert np.isnan(facet_diversity(codes, np.zeros(len(codes), int)))


def test_fit_many_in_worker_processes_equals_one_by_one():
    sets = [blobs(n_per=30, k=3, seed=s)[0] for s in range(4)]
    finder = FacetFinder(k=3, m=10, seed=0)
    alone = [finder.fit(codes) for codes in sets]
    pooled = finder.fit_many(sets, workers=2)
    for a, b in zip(alone, pooled):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.tsne, b.tsne, rtol=1e-4, atol=1e-4)


def test_batched_tsne_gives_a_neuron_the_same_embedding_alone_or_in_a_batch():
    from precompute.engine import tsne
    sets = [blobs(n_per=40, k=3, seed=s)[0] for s in range(3)]
    alone = tsne.embed_many(sets[:1])[0]
    batched = tsne.embed_many(sets)[0]
    np.testing.assert_allclose(alone, batched, rtol=1e-5, atol=1e-6)


def test_batched_tsne_gradient_is_the_gradient_of_kl_divergence():
    import torch

    from precompute.engine import tsne
    points = torch.from_numpy(np.stack([blobs(n_per=20, k=3, seed=s)[0] for s in range(2)])).double()
    p = tsne.joint_probabilities(points, 10.0).double()
    y = torch.randn(2, 60, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    w = 1 / (1 + (y[:, :, None] - y[:, None, :]).square().sum(3))
    w = w * (1 - torch.eye(60, dtype=torch.float64))
    q = w / w.sum((1, 2), keepdim=True)
    kl = (p * (p.clamp_min(1e-300) / q.clamp_min(1e-300)).log()).sum()   # 0 log 0 = 0, without NaN gradients
    (expected,) = torch.autograd.grad(kl, y)
    torch.testing.assert_close(tsne.gradient(y.detach(), p), expected, rtol=1e-6, atol=1e-9)


def test_batched_tsne_stays_finite_when_a_tiny_set_drifts_far():
    # 8 near-identical codes (a random-weight model's) spread to |y| ~ 1e3, where
    # 1 + |y_i - y_j|^2 computed from norms cancels to 0; that must not turn into NaN
    from precompute.engine import tsne
    rng = np.random.default_rng(0)
    for _ in range(20):
        sets = [(rng.normal(size=(8, 8)) * 1e-8).astype(np.float32) for _ in range(2)]
        assert all(np.isfinite(y).all() for y in tsne.embed_many(sets))


def test_batched_tsne_gradient_stays_exact_in_float32_for_a_set_spread_far():
    # a few points of a random network fly hundreds of units apart; there the norm-based distances of
    # `gradient` leave w_ii visibly below 1, and subtracting n from Z (the old way) made Z <= 0, the
    # gradient wrong by several times its size and one set of alexnet's facets NaN
    import torch

    from precompute.engine import tsne
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        y = (torch.randn(1, 8, 2, generator=g) * 150 + 400).requires_grad_(True)
        p = torch.rand(1, 8, 8, generator=g, dtype=torch.float64)
        p = (p + p.transpose(1, 2)) * (1 - torch.eye(8, dtype=torch.float64))
        p = p / p.sum()
        y64 = y.double()
        w = 1 / (1 + (y64[:, :, None] - y64[:, None, :]).square().sum(3)) * (1 - torch.eye(8, dtype=torch.float64))
        kl = (p * (p.clamp_min(1e-300) / (w / w.sum()).clamp_min(1e-300)).log()).sum()
        (expected,) = torch.autograd.grad(kl, y64)
        error = (tsne.gradient(y.detach(), p.float()).double() - expected).abs().max()
        assert error <= 1e-3 * expected.abs().max()


def test_batched_tsne_embeds_as_faithfully_as_scikit_learn():
    from sklearn.manifold import TSNE, trustworthiness
    from sklearn.metrics import adjusted_rand_score

    from precompute.engine import tsne
    codes, truth = blobs(n_per=60, k=4, seed=5)
    ours = tsne.embed_many([codes])[0]
    theirs = TSNE(2, init="pca", random_state=0).fit_transform(codes)
    assert trustworthiness(codes, ours, n_neighbors=10) >= trustworthiness(codes, theirs, n_neighbors=10) - 0.01
    labels = FacetFinder(k=4, m=15, seed=0).fit(codes).labels
    assert adjusted_rand_score(truth, labels) == 1.0


def test_no_facet_is_smaller_than_the_minimum():
    from precompute.engine.facets import dissolve_small
    codes, _ = blobs(n_per=40, k=3)
    codes = np.concatenate([codes, codes[:2] + 50])   # two far outliers: k-means gives them a cluster
    loose = FacetFinder(k=4, m=5, seed=0, min_size=1).fit(codes)
    assert min(loose.sizes()) <= 2
    facets = FacetFinder(k=4, m=5, seed=0).fit(codes)   # default minimum: m
    assert min(facets.sizes()) >= 5 and sum(facets.sizes()) == len(codes) and facets.k == 3
    points = np.array([[0.0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10], [4, 4]])
    merged = dissolve_small(points, np.array([0, 0, 0, 1, 1, 1, 2]), min_size=2)
    assert merged.tolist() == [0, 0, 0, 1, 1, 1, 0]   # the lone point joins the nearer centroid


def test_facet_diversity_is_a_share_in_0_1_and_not_driven_by_outliers():
    rng = np.random.default_rng(1)
    codes = np.abs(rng.normal(size=(60, 32))).astype(np.float32)
    outliers = np.array([0] * 58 + [1, 2])   # the 58 / 1 / 1 split that made the old ratio 5.0
    assert 0 <= facet_diversity(codes, outliers) < 0.2
    for _ in range(20):
        labels = rng.integers(0, 4, 60)
        assert 0 <= facet_diversity(codes, labels) <= 1
    apart, truth = blobs()
    assert facet_diversity(apart, truth) <= 1
    assert facet_diversity(np.ones((10, 4)), np.arange(10) % 2) == 0.0   # identical exemplars: nothing between
