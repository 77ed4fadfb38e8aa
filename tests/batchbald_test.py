"""BatchBALD: exact and sampled joint entropies against enumeration, the greedy batch against a brute-force greedy,
its diversity, masking and compilation, and consistent MC dropout through the real networks."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepbass_jax import acquisition, batchbald, uncertainty
from tests.compilations import count_compilations
from tests.helpers import random_network


def _softmax(logits):
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def _random_probs(seed, shape, scale=2.0):
    """MC samples [T, K, C]; scale 30 makes some probabilities 0 in float32."""
    return _softmax(np.random.default_rng(seed).normal(scale=scale, size=shape))


def _configuration_probs64(probs):
    """p(y_1..m) of every configuration by enumeration, probs [T, m, C] -> [C^m] (float64)."""
    probs = np.asarray(probs, np.float64)
    num_points, num_classes = probs.shape[1:]
    return np.array([np.prod([probs[:, i, y] for i, y in enumerate(labels)], axis=0).mean()
                     for labels in itertools.product(range(num_classes), repeat=num_points)])


def _entropy64(p):
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _batchbald64(probs, indices):
    """I(y_indices; w) = H(y_indices) - sum E_w[H(y_i | w)] by enumeration, probs [T, K, C] (float64)."""
    chosen = np.asarray(probs, np.float64)[:, list(indices)]
    conditional = sum(_entropy64(chosen[t, i]) for t in range(chosen.shape[0]) for i in range(chosen.shape[1]))
    return _entropy64(_configuration_probs64(chosen)) - conditional / chosen.shape[0]


def _greedy64(probs, n):
    """Kirsch et al.'s greedy by brute force: (indices, scores) of n steps."""
    chosen, scores = [], []
    for _ in range(n):
        values = {k: _batchbald64(probs, chosen + [k]) for k in range(probs.shape[1]) if k not in chosen}
        best = max(values, key=lambda k: (values[k], -k))
        chosen.append(best)
        scores.append(values[best])
    return chosen, scores


# ----------------------------------------------------------------------------------------------------------
# entropies


def test_conditional_entropies_are_mean_entropies_in_nats():
    probs = _random_probs(0, (4, 5, 3), scale=30.0)
    expected = [np.mean([_entropy64(probs[t, k].astype(np.float64)) for t in range(4)]) for k in range(5)]
    np.testing.assert_allclose(batchbald.conditional_entropies(jnp.asarray(probs)), expected, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 1, 2), (4, 1, 4), (3, 2, 3), (5, 2, 4), (4, 3, 2), (5, 3, 4)])
@pytest.mark.parametrize("scale", [0.5, 3.0, 30.0])
def test_joint_entropy_exact_matches_enumeration(shape, scale):
    exact = jax.jit(batchbald.joint_entropy_exact)
    for seed in range(2):
        probs = _random_probs(seed, shape, scale)
        expected = _entropy64(_configuration_probs64(probs))
        np.testing.assert_allclose(exact(jnp.asarray(probs)), expected, rtol=1e-5, atol=1e-5)


def test_one_sample_joint_entropy_is_entropy_of_mean_and_its_batchbald_is_bald():
    probs = jnp.asarray(_random_probs(1, (5, 6, 4)))
    num_classes = probs.shape[-1]

    @jax.jit  # eagerly, every primitive compiles on its own
    def entropies(probs):
        joint = jax.vmap(lambda p: batchbald.joint_entropy_exact(p[:, None]), in_axes=1)(probs)
        mean_entropy = uncertainty.normalized_entropy(probs.mean(axis=0)) * math.log(num_classes)
        bald = uncertainty.mutual_information(probs) * math.log(num_classes)
        return joint, mean_entropy, joint - batchbald.conditional_entropies(probs), bald

    joint, mean_entropy, batchbald_one, bald = entropies(probs)
    np.testing.assert_allclose(joint, mean_entropy, rtol=1e-5)
    np.testing.assert_allclose(batchbald_one, bald, atol=1e-6)
    # greedy_batch's first step is BALD: one pick, the argmax, scored BALD.
    indices, scores = batchbald.greedy_batch(probs, 1, jax.random.key(0))
    assert indices.tolist() == [int(np.argmax(bald))]
    np.testing.assert_allclose(scores, [bald.max()], atol=1e-6)


@pytest.mark.parametrize("shape", [(4, 3, 3), (5, 4, 2)])
def test_joint_entropy_sampled_converges_to_exact(shape):
    probs = _random_probs(2, shape)
    q = _configuration_probs64(probs)
    exact = _entropy64(q)
    # -log p(y) has variance sum q log^2 q - H^2 under the joint; stratifying by pass only lowers it.
    std = math.sqrt(max(float((q * np.log(q) ** 2).sum()) - exact**2, 0.0))
    sampled = jax.jit(batchbald.joint_entropy_sampled, static_argnames="num_samples")
    errors = []
    for num_samples in (401, 40_000):  # 401: passes drawn unequally often
        estimate = float(sampled(jnp.asarray(probs), jax.random.key(3), num_samples))
        assert abs(estimate - exact) < 4 * std / math.sqrt(num_samples) + 1e-5, num_samples
        errors.append(abs(estimate - exact))
    assert errors[1] < 0.02


def test_sampling_needs_a_configuration_per_pass():
    with pytest.raises(ValueError, match="num_samples=3 must be at least"):
        batchbald.joint_entropy_sampled(jnp.full((4, 2, 2), 0.5), jax.random.key(0), 3)


# ----------------------------------------------------------------------------------------------------------
# greedy_batch / greedy_select

GREEDY_SHAPE = (4, 7, 3)  # T, K, C


def test_exact_greedy_matches_brute_force_greedy():
    for seed in range(3):
        probs = _random_probs(10 + seed, GREEDY_SHAPE)
        indices, scores = batchbald.greedy_batch(jnp.asarray(probs), 4, jax.random.key(0), max_configurations=27)
        expected_indices, expected_scores = _greedy64(probs, 4)
        assert indices.tolist() == expected_indices, seed
        np.testing.assert_allclose(scores, expected_scores, atol=2e-5)


def test_sampled_greedy_scores_estimate_batchbald():
    # max_configurations=1: from the second pick on, the joint is sampled.
    probs = _random_probs(10, GREEDY_SHAPE)
    indices, scores = batchbald.greedy_batch(jnp.asarray(probs), 4, jax.random.key(1), max_configurations=1,
                                             num_samples=20_000)
    assert indices.tolist() == _greedy64(probs, 4)[0]
    expected = [_batchbald64(probs, indices.tolist()[: i + 1]) for i in range(4)]
    np.testing.assert_allclose(scores, expected, atol=0.02)


@pytest.mark.parametrize("max_configurations", [27, 1])
def test_greedy_keeps_to_the_candidates_and_pads(max_configurations):
    probs = jnp.asarray(_random_probs(11, GREEDY_SHAPE, scale=30.0))
    select = functools.partial(batchbald.greedy_select, probs, 4, jax.random.key(2),
                               max_configurations=max_configurations, num_samples=64)
    mask = np.array([0, 1, 0, 1, 1, 0, 1], bool)
    indices = np.asarray(select(jnp.asarray(mask)))
    assert indices.dtype == np.int32 and sorted(indices) == [1, 3, 4, 6]
    indices = np.asarray(select(jnp.asarray(mask & (np.arange(7) < 4))))
    assert sorted(indices[:2]) == [1, 3] and indices[2:].tolist() == [-1, -1]
    assert np.asarray(select(jnp.zeros(7, bool))).tolist() == [-1] * 4


def test_greedy_refuses_more_picks_than_candidates():
    with pytest.raises(ValueError, match="n=8 samples from only 7"):
        batchbald.greedy_select(jnp.full(GREEDY_SHAPE, 1 / 3), 8, jax.random.key(0))


def test_greedy_does_not_pick_a_duplicate_that_top_bald_picks():
    # T = 4 passes, C = 2. Candidate 0 splits the passes {0, 1} | {2, 3}, candidate 1 is its copy (the same
    # probabilities: y_1 repeats what y_0 told about w), candidate 2 splits them {0, 2} | {1, 3} a little less
    # confidently; the rest are nearly certain.
    split = np.eye(2, dtype=np.float32)[[0, 0, 1, 1]]
    other = np.array([[0.95, 0.05], [0.05, 0.95], [0.95, 0.05], [0.05, 0.95]], np.float32)
    calm = _softmax(np.random.default_rng(4).normal(size=(4, 5, 2)) + np.array([3.0, 0.0]))
    probs = jnp.asarray(np.concatenate([split[:, None], split[:, None], other[:, None], calm], axis=1))
    bald = uncertainty.mutual_information(probs)
    top = acquisition.max_score(bald, jnp.ones(8, bool), jax.random.key(0), 2)
    assert sorted(top.tolist()) == [0, 1]
    assert batchbald.greedy_select(probs, 2, jax.random.key(0)).tolist() == [0, 2]


def test_greedy_select_compiles_once_per_shape():
    first, second = (jnp.asarray(_random_probs(seed, (3, 9, 2))) for seed in (20, 21))
    with count_compilations() as compiled:
        picks = [batchbald.greedy_select(probs, 3, jax.random.key(0)) for probs in (first, second)]
    assert compiled["greedy_select"] == 1
    assert picks[0].tolist() != picks[1].tolist()  # the second call used its own probabilities


# ----------------------------------------------------------------------------------------------------------
# consistent MC dropout through the real networks

PASSES = 3


def _network(architecture, dropout_masks):
    """(apply_fn, params, input shape): the CNN on 8x8x1 images or the toy MLP on 2-D points, random parameters."""
    return random_network(architecture, *((10, (8, 8, 1)) if architecture == "cnn" else (3, (2,))), dropout_masks)


@pytest.mark.parametrize("architecture,dropout_masks", [("mlp", "hash"), ("mlp", "threefry"), ("cnn", "hash")])
def test_consistent_mc_probs_share_one_mask_per_pass(architecture, dropout_masks):
    apply_fn, params, input_shape = _network(architecture, dropout_masks)
    x = np.asarray(jax.random.normal(jax.random.key(1), (4, *input_shape)))
    images = jnp.asarray(np.concatenate([x, x[:1]]))  # sample 4 is sample 0 again
    key = jax.random.key(7)
    probs = uncertainty.consistent_mc_probs(apply_fn, params, images, key, PASSES)
    assert probs.shape[:2] == (PASSES, 5)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    # One mask for every sample: the copy matches in every pass, and the passes differ.
    np.testing.assert_array_equal(probs[:, 4], probs[:, 0])
    assert not np.allclose(probs[0], probs[1]) and not np.allclose(probs[1], probs[2])
    # Pass t is the network with split(key, T)[t], one sample at a time.
    pass_key = jax.random.split(key, PASSES)[1]
    alone = jax.nn.softmax(jax.jit(apply_fn)(params, images[2:3], pass_key))[0]
    np.testing.assert_allclose(probs[1, 2], alone, atol=1e-6)
    # Independent of the chunk: another order, or other samples beside it, give the same rows; fixed by the key.
    order = np.array([3, 1, 4, 0, 2])
    np.testing.assert_allclose(uncertainty.consistent_mc_probs(apply_fn, params, images[order], key, PASSES),
                               probs[:, order], atol=1e-6)
    company = images.at[jnp.array([0, 2, 3, 4])].set(jax.random.normal(jax.random.key(2), (4, *input_shape)))
    np.testing.assert_allclose(uncertainty.consistent_mc_probs(apply_fn, params, company, key, PASSES)[:, 1],
                               probs[:, 1], atol=1e-6)
    np.testing.assert_array_equal(uncertainty.consistent_mc_probs(apply_fn, params, images, key, PASSES), probs)
    assert not np.allclose(uncertainty.consistent_mc_probs(apply_fn, params, images, jax.random.key(8), PASSES),
                           probs)
    # mc_probs draws each row a mask of its own: the copy differs.
    per_row = jax.jit(uncertainty.mc_probs, static_argnums=(0, 4))(apply_fn, params, images, key, PASSES)
    assert not np.allclose(per_row[:, 4], per_row[:, 0])
