"""Pseudo-labels (eq. 4), the threshold theta (eq. 8) and the selection of eq. 9."""

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from deepbass_jax import pseudo_label

SETTINGS = settings(max_examples=40, deadline=None)
# XLA on CPU flushes float32 subnormals to zero, so keep them out of comparisons against numpy.
UNIT = st.floats(0.0, 1.0, width=32, allow_subnormal=False)


@st.composite
def pools(draw, max_size=40):
    """(entropy [N] in [0, 1], labeled [N], previous selection [N] disjoint from labeled)."""
    n = draw(st.integers(1, max_size))
    entropy = draw(hnp.arrays(np.float32, n, elements=UNIT))
    labeled = draw(hnp.arrays(np.bool_, n))
    selected = draw(hnp.arrays(np.bool_, n)) & ~labeled
    return entropy, labeled, selected


def _select(entropy, theta, labeled, selected, mode):
    return np.asarray(pseudo_label.select(jnp.asarray(entropy), jnp.float32(theta), labeled, selected, mode))


def test_pseudo_labels_are_argmax_int32():
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.1, 0.1, 0.8]], np.float32)
    labels = pseudo_label.pseudo_labels(probs)
    assert labels.dtype == jnp.int32 and labels.shape == (3,)
    np.testing.assert_array_equal(labels, [1, 0, 2])


@SETTINGS
@given(
    hnp.arrays(
        np.float32,
        st.sampled_from([(1, 2), (6, 3), (6, 10)]),  # few shapes: eager calls compile once per shape
        elements=st.floats(-20, 20, width=32),
    )
)
def test_pseudo_labels_equal_argmax_of_softmax(logits):
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    labels = pseudo_label.pseudo_labels(probs)
    assert labels.dtype == jnp.int32
    np.testing.assert_array_equal(labels, np.argmax(probs, axis=-1))


def test_threshold_is_mean_of_labeled_entropies():
    np.testing.assert_allclose(pseudo_label.threshold(jnp.array([0.1, 0.2, 0.6])), 0.3, rtol=1e-6)
    np.testing.assert_allclose(pseudo_label.threshold(jnp.array([0.42])), 0.42, rtol=1e-6)


@SETTINGS
@given(hnp.arrays(np.float32, st.integers(1, 50), elements=UNIT))
def test_threshold_property(entropies):
    theta = float(pseudo_label.threshold(jnp.asarray(entropies)))
    np.testing.assert_allclose(theta, entropies.astype(np.float64).mean(), rtol=1e-5, atol=1e-7)
    assert entropies.min() - 1e-6 <= theta <= entropies.max() + 1e-6


def test_threshold_of_no_labeled_samples_raises():
    with pytest.raises(ValueError, match="labeled"):
        pseudo_label.threshold(jnp.zeros((0,)))


@SETTINGS
@given(pools(), UNIT, st.sampled_from(pseudo_label.MODES))
def test_select_never_pseudo_labels_ground_truth(pool, theta, mode):
    entropy, labeled, selected = pool
    result = _select(entropy, theta, labeled, selected, mode)
    assert result.dtype == np.bool_ and result.shape == labeled.shape
    assert not np.any(result & labeled)


@SETTINGS
@given(pools(), UNIT)
def test_all_data_selects_exactly_the_unlabeled_samples(pool, theta):
    entropy, labeled, selected = pool
    np.testing.assert_array_equal(_select(entropy, theta, labeled, selected, "all_data"), ~labeled)


@SETTINGS
@given(pools(), UNIT, st.data())
def test_step_wise_keeps_previous_selection_minus_newly_labeled(pool, theta, data):
    entropy, labeled, selected = pool
    # Some previously selected samples are bought from the oracle this iteration.
    newly_labeled = data.draw(hnp.arrays(np.bool_, labeled.shape)) & selected
    now_labeled = labeled | newly_labeled
    result = _select(entropy, theta, now_labeled, selected, "step_wise")
    kept = selected & ~newly_labeled
    assert np.all(result[kept])
    assert not np.any(result[newly_labeled])
    # New additions are exactly the unlabeled samples below theta.
    np.testing.assert_array_equal(result & ~selected, (entropy < np.float32(theta)) & ~now_labeled & ~selected)


@SETTINGS
@given(pools(), UNIT, UNIT)
def test_step_wise_is_monotone_in_theta(pool, theta1, theta2):
    entropy, labeled, selected = pool
    low, high = sorted([theta1, theta2])
    small = _select(entropy, low, labeled, selected, "step_wise")
    large = _select(entropy, high, labeled, selected, "step_wise")
    assert np.all(large[small])


@SETTINGS
@given(pools(), UNIT)
def test_step_wise_from_empty_selection_is_unlabeled_below_theta(pool, theta):
    entropy, labeled, _ = pool
    result = _select(entropy, theta, labeled, np.zeros_like(labeled), "step_wise")
    np.testing.assert_array_equal(result, (entropy < np.float32(theta)) & ~labeled)


def test_step_wise_hand_example_uses_strict_inequality():
    entropy = jnp.array([0.1, 0.5, 0.9, 0.2, 0.5], jnp.float32)
    labeled = np.array([True, False, False, False, False])
    selected = np.array([False, False, True, False, False])
    result = _select(entropy, 0.5, labeled, selected, "step_wise")
    np.testing.assert_array_equal(result, [False, False, True, True, False])


def test_select_under_jit_equals_eager():
    entropy = jnp.array([0.1, 0.5, 0.9, 0.2, 0.3], jnp.float32)
    labeled = jnp.array([True, False, False, False, False])
    selected = jnp.array([False, False, True, False, True])
    for mode in pseudo_label.MODES:
        jitted = jax.jit(pseudo_label.select, static_argnames="mode")(entropy, 0.4, labeled, selected, mode=mode)
        np.testing.assert_array_equal(jitted, pseudo_label.select(entropy, 0.4, labeled, selected, mode))


def test_unknown_mode_raises():
    mask = jnp.zeros(3, bool)
    with pytest.raises(ValueError, match="step_wise"):
        pseudo_label.select(jnp.zeros(3), 0.5, mask, mask, "greedy")


# ------------------------------------------------------------ guards against lock-in (DeepBASS+)
def test_class_frequencies_count_the_ground_truth_with_add_one_smoothing():
    ground_truth = jnp.array([0, 0, 2, -1, -1, 0], jnp.int32)
    np.testing.assert_allclose(pseudo_label.class_frequencies(ground_truth, 3), [4 / 7, 1 / 7, 2 / 7], rtol=1e-6)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 6), st.integers(3, 30), st.integers(0, 2**31 - 1))
def test_alignment_keeps_distributions_and_is_the_identity_when_the_pool_matches_the_target(classes, size, seed):
    rng = np.random.default_rng(seed)
    probs = jnp.asarray(rng.dirichlet(np.ones(classes), size=size).astype(np.float32))
    unlabeled = jnp.asarray(rng.random(size) < 0.8).at[0].set(True)
    aligned = pseudo_label.align_distribution(probs, unlabeled, jnp.full(classes, 1.0 / classes))
    np.testing.assert_allclose(aligned.sum(axis=-1), 1.0, rtol=1e-5)
    assert np.all(np.asarray(aligned) >= 0)
    pool_mean = np.asarray(probs)[np.asarray(unlabeled)].mean(axis=0)
    same = pseudo_label.align_distribution(probs, unlabeled, jnp.asarray(pool_mean))
    np.testing.assert_allclose(same, probs, rtol=1e-4, atol=1e-6)


def test_alignment_turns_a_pseudo_label_away_from_the_class_the_pool_over_predicts():
    # The pool predicts class 1 twice as often as class 0 (a 7 -> 9 drift); a sample on the fence goes to 0.
    probs = jnp.array([[0.2, 0.8], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]], jnp.float32)
    unlabeled = jnp.ones(4, bool)
    aligned = pseudo_label.align_distribution(probs, unlabeled, jnp.array([0.5, 0.5]))
    assert pseudo_label.pseudo_labels(probs)[3] == 1 and pseudo_label.pseudo_labels(aligned)[3] == 0
    assert pseudo_label.pseudo_labels(aligned)[0] == 1  # a confident prediction stays


def test_refresh_with_the_guards_off_is_the_papers_and_confidence_drops_unsure_samples():
    from deepbass_jax import algorithm, uncertainty
    probs = jnp.array([[0.97, 0.03], [0.6, 0.4], [0.1, 0.9], [0.5, 0.5]], jnp.float32)
    stats = uncertainty.UncertaintyStats(probs, pseudo_label.pseudo_labels(probs).astype(jnp.float32) * 0 + 0.5,
                                         jnp.zeros(4), jnp.zeros(4))
    labeled = jnp.array([False, False, False, True])
    ground_truth = jnp.array([-1, -1, -1, 1], jnp.int32)
    args = (stats, jnp.float32(1.0), labeled, jnp.zeros(4, bool), "all_data")
    paper = algorithm.refresh_pseudo_labels(*args)
    np.testing.assert_array_equal(paper, [0, 0, 1, -1])
    np.testing.assert_array_equal(algorithm.refresh_pseudo_labels(*args, ground_truth), paper)
    np.testing.assert_array_equal(algorithm.refresh_pseudo_labels(*args, ground_truth, confidence=0.9), [0, -1, 1, -1])
