"""The facet score (precompute.evidence.facet_score): a facet's image must tell its facet's inputs from the
neuron's other facets; one picture for every facet, whatever it is, scores chance."""
import numpy as np
import pytest

from precompute.evidence import facet_score


def blobs(k=4, per=12, dims=32, spread=0.3, seed=0):
    """k facets: held-out feature rows scattered around k centres that share a large common part (the class)."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=dims) * 5
    centres = common + rng.normal(size=(k, dims))
    labels = np.repeat(np.arange(k), per)
    return centres, centres[labels] + spread * rng.normal(size=(len(labels), dims)), labels


def test_trials_pair_each_image_of_a_facet_with_one_of_another_facet():
    labels = np.array([0, 0, 1, 2, 2, 2])
    trials = facet_score.make_trials(labels, seed=3)
    assert len(trials) == 6 and list(trials.same) == list(range(6))
    assert (labels[trials.same] == trials.facet).all()
    assert (labels[trials.other] != trials.facet).all()
    assert len(facet_score.make_trials(np.zeros(5, int))) == 0, "one facet: nothing to tell apart"


def test_images_go_to_the_facet_with_the_nearest_mean_code():
    means = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    codes = np.array([[1.0, 1.0], [9.0, -1.0], [2.0, 8.0], [6.0, 0.0]])
    assert list(facet_score.assign(codes, means)) == [0, 1, 2, 1]


def test_each_facets_own_picture_scores_high_and_another_facets_picture_is_caught():
    centres, heldout, labels = blobs()
    trials = facet_score.make_trials(labels)
    right, facets = facet_score.scores(centres, heldout, trials)
    assert right.mean() > 0.95
    shown = (np.arange(4) - 1) % 4   # facet f's reference shows facet f-1
    shuffled, _ = facet_score.scores(centres[shown], heldout, trials)
    against_the_shown = labels[trials.other] == shown[trials.facet]
    assert against_the_shown.any() and (shuffled[against_the_shown] == 0).all()
    assert shuffled.mean() < right.mean() - 0.25
    per = facet_score.per_facet(right, facets, len(centres))
    assert [n for _, n in per] == [12] * 4 and all(score > 0.9 for score, _ in per)


@pytest.mark.parametrize("degenerate", ["one stamp for every facet", "noise", "the class mean"])
def test_one_picture_for_every_facet_scores_chance(degenerate):
    centres, heldout, labels = blobs(k=5, per=40)
    rng = np.random.default_rng(1)
    picture = {"one stamp for every facet": centres[0] + rng.normal(size=centres.shape[1]),
               "noise": rng.normal(size=centres.shape[1]) * 5,
               "the class mean": heldout.mean(0)}[degenerate]
    right, _ = facet_score.scores(np.repeat(picture[None], 5, 0), heldout, facet_score.make_trials(labels))
    assert 0.35 <= right.mean() <= 0.65, right.mean()


def test_the_pool_holds_each_facets_strongest_ten_from_the_strongest_quarter():
    """A neuron's strongest facet must not fill the pool: every facet brings its own strongest images."""
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = np.repeat([0, 1, 2], [500, 300, 200])   # facet 2 strong, facet 0 middling, facet 1 weakest
    acts = np.concatenate([rng.uniform(1, 2, 500), rng.uniform(0, 1, 300), rng.uniform(2, 3, 200)])
    codes = means[labels] + rng.normal(scale=0.5, size=(1000, 2))
    pool, facets = facet_score.pool(acts, codes, means)
    assert (facets == labels[pool]).all()
    assert np.bincount(facets).tolist() == [10, 0, 10], "facet 1 has no image in the strongest quarter"
    assert acts[pool[facets == 0]].min() >= np.sort(acts[labels == 0])[-10]   # facet 0's strongest ten
    assert len(set(pool)) == len(pool)
