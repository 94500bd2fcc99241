"""The explanation score: trials from held-out activations, answered by similarity to references."""
import numpy as np
import pytest

from precompute.evidence.explain import Trials, choice_accuracy, make_trials, similarity_to


def test_trials_pair_the_most_activating_images_with_moderately_activating_ones():
    acts = np.arange(1000, dtype=float)
    trials = make_trials(acts, n=10, seed=0)
    assert sorted(trials.strong) == list(range(990, 1000))
    assert all(900 <= w <= 979 for w in trials.weak), "drawn from the images ranked 2-10% from the top"
    assert sorted(make_trials(acts[:100], n=10).weak) != list(range(10)), "a small set: the next ranks, not the last"
    again = make_trials(acts, n=10, seed=0)
    assert np.array_equal(trials.strong, again.strong) and np.array_equal(trials.weak, again.weak)


def test_ties_are_broken_at_random_and_pairs_of_equals_are_dropped():
    acts = np.r_[np.zeros(50), [5.0, 6.0]]           # a ReLU unit: most images give 0
    trials = make_trials(acts, n=2, seed=0)
    assert len(trials) == 2 and set(trials.strong) == {50, 51}
    assert len(make_trials(np.r_[np.zeros(50), [5.0]], n=2, seed=0)) == 1, "0 against 0 has no right answer"
    others = make_trials(acts, n=2, seed=1)
    assert not np.array_equal(np.sort(trials.weak), np.sort(others.weak))
    assert len(make_trials(np.zeros(30), n=5)) == 0


def test_bad_activations_are_refused():
    with pytest.raises(ValueError):
        make_trials(np.array([1.0, np.nan, 2.0]))


def test_the_score_is_right_when_the_strong_image_is_nearer_the_references():
    rng = np.random.default_rng(0)
    strong, weak = rng.normal(size=(8, 16)) + 3, rng.normal(size=(8, 16)) - 3
    heldout = np.concatenate([strong, weak])
    trials = Trials(np.arange(8), np.arange(8, 16))
    assert choice_accuracy(strong[:1] * 2, heldout, trials) == 1.0       # a reference like the strong images
    assert choice_accuracy(weak[:1], heldout, trials) == 0.0             # one like the weak ones
    assert choice_accuracy(np.ones((1, 16)) * 0, heldout, trials) == 0.5  # no direction: every trial a tie
    assert np.isnan(choice_accuracy(strong[:1], heldout, Trials(np.array([], int), np.array([], int))))


def test_similarity_is_to_the_nearest_reference():
    refs = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert similarity_to(refs, np.array([[0.0, 2.0], [1.0, 1.0]])) == pytest.approx([1.0, np.sqrt(0.5)])
