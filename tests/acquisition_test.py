"""Acquisition policies: candidate-only, distinct, padded selections; max-score, random and eq. 14."""

import functools

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from deepbass_jax import acquisition, uncertainty

SETTINGS = settings(max_examples=40, deadline=None)
# Uncertainty scores lie in [0, 1]; XLA on CPU flushes float32 subnormals, so keep them out.
SCORE = st.floats(0.0, 1.0, width=32, allow_subnormal=False)


@st.composite
def problems(draw):
    """(scores [N] float32, candidate_mask [N] bool, key seed, n) with 1 <= n <= N."""
    # Few distinct shapes: eager calls compile once per (N, n).
    size = draw(st.sampled_from([1, 4, 11, 25]))
    # A small grid of values makes ties (and scores equal to the mean) common.
    element = st.one_of(SCORE, st.sampled_from([0.0, 0.25, 0.5, 1.0]).map(np.float32))
    scores = draw(hnp.arrays(np.float32, size, elements=element))
    mask = draw(hnp.arrays(np.bool_, size))
    n = draw(st.sampled_from(sorted({1, 3, size // 2, size} & set(range(1, size + 1)))))
    return scores, mask, draw(st.integers(0, 2**31 - 1)), n


def _call(policy, scores, mask, seed, n, **kwargs):
    return policy(jnp.asarray(scores), jnp.asarray(mask), jax.random.key(seed), n, **kwargs)


def _stats(scores):
    """Pool statistics whose every per-sample score is `scores` [N] (two-class mean probabilities beside them)."""
    scores = jnp.asarray(scores)
    return uncertainty.UncertaintyStats(jnp.stack([scores, 1 - scores], axis=-1), scores, scores, scores)


def _select(policy, scores, mask, seed, n, **kwargs):
    """A registered selector on statistics whose scores are `scores`."""
    return policy(_stats(scores), jnp.asarray(mask), jax.random.key(seed), n, **kwargs)


def _top_by_score(scores, indices, k):
    """The k of `indices` with the highest score, ties to the lower index."""
    ranked = sorted(indices, key=lambda i: (-scores[i], i))
    return ranked[:k]


@pytest.mark.parametrize("name", sorted(acquisition.POLICIES))
@SETTINGS
@given(problem=problems())
def test_policy_returns_distinct_candidates_then_padding(name, problem):
    scores, mask, seed, n = problem
    out = _select(acquisition.get(name), scores, mask, seed, n)
    assert out.shape == (n,) and out.dtype == jnp.int32
    out = np.asarray(out)
    valid = acquisition.valid_indices(out)
    candidates = np.flatnonzero(mask)
    assert len(valid) == min(n, len(candidates))
    np.testing.assert_array_equal(out[: len(valid)], valid)  # padding only at the end
    np.testing.assert_array_equal(out[len(valid) :], -1)
    assert len(set(valid.tolist())) == len(valid)
    assert np.all(mask[valid])
    if len(candidates) <= n:
        assert set(valid.tolist()) == set(candidates.tolist())


def test_valid_indices_strips_padding():
    np.testing.assert_array_equal(acquisition.valid_indices(jnp.array([4, 0, 2, -1, -1])), [4, 0, 2])
    assert acquisition.valid_indices(np.array([-1, -1])).size == 0


def test_no_candidates_gives_only_padding():
    for policy in acquisition.POLICIES.values():
        out = _select(policy, np.linspace(0, 1, 6, dtype=np.float32), np.zeros(6, bool), 0, 3)
        np.testing.assert_array_equal(out, [-1, -1, -1])


@SETTINGS
@given(problem=problems())
def test_max_score_returns_the_n_highest_scored_candidates_in_order(problem):
    scores, mask, seed, n = problem
    out = acquisition.valid_indices(_call(acquisition.max_score, scores, mask, seed, n))
    np.testing.assert_array_equal(out, _top_by_score(scores, np.flatnonzero(mask), n))


def test_max_score_hand_example():
    scores = np.array([0.9, 0.1, 0.8, 0.7, 0.95], np.float32)
    mask = np.array([False, True, True, True, True])  # sample 0 is labeled
    np.testing.assert_array_equal(_call(acquisition.max_score, scores, mask, 0, 2), [4, 2])


def test_random_is_seeded():
    scores = np.zeros(50, np.float32)
    mask = np.arange(50) % 3 != 0
    a = _call(acquisition.random, scores, mask, 7, 10)
    np.testing.assert_array_equal(a, _call(acquisition.random, scores, mask, 7, 10))
    assert not np.array_equal(a, _call(acquisition.random, scores, mask, 8, 10))


def test_random_ignores_scores():
    mask = np.ones(20, bool)
    low = _call(acquisition.random, np.zeros(20, np.float32), mask, 3, 5)
    high = _call(acquisition.random, np.linspace(0, 1, 20, dtype=np.float32), mask, 3, 5)
    np.testing.assert_array_equal(low, high)


def _pick_counts(policy, scores, mask, n, num_keys, **kwargs):
    """How often each index is picked over `num_keys` keys (vmapped: one compile)."""
    keys = jax.random.split(jax.random.key(123), num_keys)
    picks = jax.vmap(lambda k: policy(jnp.asarray(scores), jnp.asarray(mask), k, n, **kwargs))(keys)
    picks = np.asarray(picks)
    assert np.all(picks >= 0)
    return np.bincount(picks.ravel(), minlength=len(scores))


def test_random_is_uniform_over_candidates():
    mask = np.ones(12, bool)
    mask[[0, 5, 11]] = False
    scores = np.linspace(0, 1, 12, dtype=np.float32)  # must not matter
    counts = _pick_counts(acquisition.random, scores, mask, n=3, num_keys=3000)
    np.testing.assert_array_equal(counts[~mask], 0)
    expected = 3000 * 3 / mask.sum()  # 1000 picks each; binomial std ~ 27
    np.testing.assert_allclose(counts[mask], expected, rtol=0.12)


def _expected_above_level(scores, mask, n, level):
    """(indices that must all be returned or be the pool of choice, whether they fill the budget)."""
    candidates = np.flatnonzero(mask)
    above = candidates[scores[candidates] > level]
    if len(above) >= n:
        return set(above.tolist()), True
    others = candidates[scores[candidates] <= level]
    return set(above.tolist()) | set(_top_by_score(scores, others, n - len(above))), False


@SETTINGS
@given(problem=problems())
def test_above_average_draws_above_the_mean_of_all_scores(problem):
    scores, mask, seed, n = problem
    level = np.float32(jnp.asarray(scores).mean())  # eq. 14: over labeled and unlabeled samples alike
    out = set(acquisition.valid_indices(_call(acquisition.above_average_random, scores, mask, seed, n)).tolist())
    expected, enough_above = _expected_above_level(scores, mask, n, level)
    if enough_above:
        assert out <= expected  # n of the above-mean candidates
        assert len(out) == n
    else:
        assert out == expected  # all above-mean candidates plus the highest-scored others


@SETTINGS
@given(problem=problems(), reference=SCORE)
def test_above_average_with_reference_compares_against_it(problem, reference):
    scores, mask, seed, n = problem
    out = _call(acquisition.above_average_random, scores, mask, seed, n, reference=jnp.float32(reference))
    out = set(acquisition.valid_indices(out).tolist())
    expected, enough_above = _expected_above_level(scores, mask, n, np.float32(reference))
    if enough_above:
        assert out <= expected and len(out) == n
    else:
        assert out == expected


def test_above_average_uses_the_mean_over_labeled_samples_too():
    # Labeled samples (not candidates) score 0: the mean of all scores is 0.375, the candidates' mean 0.75.
    scores = np.array([0.0, 0.0, 0.0, 0.0, 0.5, 0.6, 0.9, 1.0], np.float32)
    mask = np.array([False] * 4 + [True] * 4)
    counts = _pick_counts(acquisition.above_average_random, scores, mask, n=2, num_keys=400)
    np.testing.assert_array_equal(counts[:4], 0)
    # All four candidates are above 0.375, so each is drawn (about 200 times), not only 0.9 and 1.0.
    assert np.all(counts[4:] > 120), counts


def test_above_average_is_random_among_above_level_candidates():
    scores = np.array([0.9, 0.8, 0.85, 0.1, 0.0, 0.95, 0.7, 0.05], np.float32)  # mean 0.54375
    mask = np.ones(8, bool)
    counts = _pick_counts(acquisition.above_average_random, scores, mask, n=2, num_keys=500)
    above = scores > scores.mean()
    np.testing.assert_array_equal(counts[~above], 0)
    np.testing.assert_allclose(counts[above], 500 * 2 / above.sum(), rtol=0.25)


def test_above_average_reference_changes_the_level():
    scores = np.array([0.2, 0.3, 0.4, 0.9], np.float32)  # mean 0.45: only sample 3 lies above
    mask = np.ones(4, bool)
    counts = _pick_counts(
        acquisition.above_average_random, scores, mask, n=1, num_keys=300, reference=jnp.float32(0.25)
    )
    assert counts[0] == 0 and np.all(counts[1:] > 50), counts
    default = _pick_counts(acquisition.above_average_random, scores, mask, n=1, num_keys=50)
    np.testing.assert_array_equal(default, [0, 0, 0, 50])


def test_policy_registry():
    fields = uncertainty.UncertaintyStats._fields
    assert set(acquisition.POLICIES) == {"max_entropy", "above_average", "random", "bald", "variation_ratio", "margin",
                                         "least_confidence"}
    for name, policy in acquisition.POLICIES.items():
        assert callable(policy.score) or policy.score in fields, name
        assert acquisition.get(name) is policy
    assert acquisition.get("bald").score == "mutual_information"
    assert acquisition.get("variation_ratio").score == "variation_ratio"
    assert acquisition.get("max_entropy").score == "entropy"
    mean_probs = jnp.array([[0.6, 0.3, 0.1]])
    stats = uncertainty.UncertaintyStats(mean_probs, *(jnp.zeros(1),) * 3)
    np.testing.assert_allclose(acquisition.get("margin").scores(stats), [0.7], atol=1e-6)
    np.testing.assert_allclose(acquisition.get("least_confidence").scores(stats), [0.4], atol=1e-6)
    assert acquisition.get("pkg.scores:mine") is acquisition.CUSTOM and acquisition.CUSTOM.score == "custom"


def test_unknown_policy_raises_listing_choices():
    with pytest.raises(ValueError) as error:
        acquisition.get("nope")
    assert "nope" in str(error.value)
    for name in acquisition.POLICIES:
        assert name in str(error.value)


@pytest.mark.parametrize("name", sorted(acquisition.POLICIES))
def test_n_larger_than_pool_raises(name):
    with pytest.raises(ValueError, match="n=6"):
        _select(acquisition.get(name), np.zeros(5, np.float32), np.ones(5, bool), 0, 6)


@pytest.mark.parametrize("name", sorted(acquisition.POLICIES))
def test_policy_under_jit_equals_eager(name):
    policy = acquisition.get(name)
    rng = np.random.default_rng(0)
    jitted = jax.jit(policy, static_argnums=3)
    partials = {n: jax.jit(functools.partial(policy, n=n)) for n in (5, 30)}
    for seed in range(3):
        scores = rng.uniform(size=40).astype(np.float32)
        mask = rng.uniform(size=40) < 0.6
        for n, partial in partials.items():  # 30 > number of candidates: padding under jit too
            eager = _select(policy, scores, mask, seed, n)
            np.testing.assert_array_equal(_select(jitted, scores, mask, seed, n), eager)
            np.testing.assert_array_equal(partial(_stats(scores), mask, jax.random.key(seed)), eager)
            np.testing.assert_array_equal(_call(policy.select, policy.scores(_stats(scores)), mask, seed, n), eager)


def test_above_average_with_traced_reference_under_jit():
    scores = np.random.default_rng(1).uniform(size=30).astype(np.float32)
    mask = np.ones(30, bool)
    select = jax.jit(acquisition.above_average_random, static_argnums=3)
    for reference in (0.2, 0.8):
        eager = _call(acquisition.above_average_random, scores, mask, 0, 4, reference=jnp.float32(reference))
        jitted = select(scores, mask, jax.random.key(0), 4, reference=jnp.float32(reference))
        np.testing.assert_array_equal(jitted, eager)
        assert np.all(scores[np.asarray(jitted)] > reference)
