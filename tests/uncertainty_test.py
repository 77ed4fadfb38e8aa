"""MC-dropout inference and its scores: entropy (eq. 3), BALD, variation ratio, chunked pool inference (one run
through `algorithm.pool_stats`)."""

import functools
import math

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from deepbass_jax import algorithm, uncertainty
from deepbass_jax.chunks import pad_rows, padded_chunks
from tests.compilations import count_compilations
from tests.helpers import random_network

SETTINGS = settings(max_examples=30, deadline=None)
TOL = 1e-6


# ----------------------------------------------------------------------------------------------------------
# Probability strategies: softmax of drawn logits, scaled up to near-one-hot (saturated) vectors.
# Eager calls compile every primitive once per shape, so the drawn shapes come from a small family:
# T = 6 passes, N = 4 samples, C classes in {2, 10, 20} (all of 2..20 is covered separately).
PASSES = (6,)
NUM_SAMPLES = 4
CLASSES = (2, 10, 20)


@st.composite
def mc_probs_arrays(draw, passes=PASSES):
    """MC samples [T, N, C] (float32, rows on the simplex) from a small family of shapes."""
    shape = (draw(st.sampled_from(passes)), NUM_SAMPLES, draw(st.sampled_from(CLASSES)))
    base = draw(hnp.arrays(np.float32, shape, elements=st.floats(-1.0, 1.0, width=32)))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 30.0, 200.0]))  # 200: exactly one-hot after float32 softmax
    return _softmax(base * np.float32(scale))


def _softmax(logits):
    """float32 softmax in numpy (jax.nn.softmax would compile per drawn shape)."""
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def prob_rows():
    """Probability vectors [N, C]."""
    return mc_probs_arrays(passes=(1,)).map(lambda probs: probs[0])


def _entropy64(probs):
    """Eq. 3 in float64 numpy: -sum p log p / log C."""
    p = np.asarray(probs, np.float64)
    terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=-1) / np.log(p.shape[-1])


def _one_hot(classes, num_classes):
    return np.eye(num_classes, dtype=np.float32)[np.asarray(classes)]


# ----------------------------------------------------------------------------------------------------------
# normalized_entropy


@SETTINGS
@given(prob_rows())
def test_normalized_entropy_lies_in_unit_interval_and_matches_numpy(probs):
    entropy = np.asarray(uncertainty.normalized_entropy(jnp.asarray(probs)))
    assert entropy.shape == probs.shape[:-1]
    assert np.all(entropy >= -TOL) and np.all(entropy <= 1 + TOL)
    np.testing.assert_allclose(entropy, _entropy64(probs), atol=2e-6)


def test_normalized_entropy_of_one_hot_is_zero_and_of_uniform_is_one():
    entropy_fn = jax.jit(uncertainty.normalized_entropy)  # one small compile per C (eager: one per primitive)
    for num_classes in range(2, 21):
        skewed = np.full(num_classes, 0.3 / (num_classes - 1), np.float32)
        skewed[0] = 0.7
        rows = np.stack(
            [
                _one_hot(0, num_classes),
                _one_hot(num_classes - 1, num_classes),
                np.full(num_classes, 1.0 / num_classes, np.float32),
                skewed,
            ]
        )
        entropy = np.asarray(entropy_fn(rows))
        message = f"C={num_classes}"
        np.testing.assert_array_equal(entropy[:2], 0.0, err_msg=message)
        np.testing.assert_allclose(entropy[2], 1.0, atol=TOL, err_msg=message)
        np.testing.assert_allclose(entropy[3], _entropy64(skewed), atol=TOL, err_msg=message)
        assert 0.0 < entropy[3] < 1.0, message
    # Eager, for the shapes the property tests use.
    for num_classes in CLASSES:
        one_hot = _one_hot(np.arange(NUM_SAMPLES) % num_classes, num_classes)
        np.testing.assert_array_equal(uncertainty.normalized_entropy(jnp.asarray(one_hot)), 0.0)
        uniform = np.full((NUM_SAMPLES, num_classes), 1.0 / num_classes, np.float32)
        np.testing.assert_allclose(uncertainty.normalized_entropy(jnp.asarray(uniform)), 1.0, atol=TOL)


@SETTINGS
@given(prob_rows(), st.randoms(use_true_random=False))
def test_normalized_entropy_is_invariant_under_class_permutation(probs, rng):
    permutation = list(range(probs.shape[-1]))
    rng.shuffle(permutation)
    np.testing.assert_allclose(
        uncertainty.normalized_entropy(jnp.asarray(probs[:, permutation])),
        uncertainty.normalized_entropy(jnp.asarray(probs)),
        atol=TOL,
    )


def test_normalized_entropy_hand_example():
    # [1/2, 1/4, 1/4]: H = 1.5 log 2 / log 3.
    probs = jnp.array([[0.5, 0.25, 0.25]])
    np.testing.assert_allclose(uncertainty.normalized_entropy(probs), [1.5 * math.log(2) / math.log(3)], rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# predictive_mean, mutual_information (BALD), variation_ratio


@SETTINGS
@given(mc_probs_arrays())
def test_predictive_mean_is_mean_over_passes_and_on_the_simplex(probs):
    mean = np.asarray(uncertainty.predictive_mean(jnp.asarray(probs)))
    assert mean.shape == probs.shape[1:]
    np.testing.assert_allclose(mean, probs.mean(axis=0), atol=1e-7)
    np.testing.assert_allclose(mean.sum(axis=-1), 1.0, atol=1e-5)


@SETTINGS
@given(mc_probs_arrays())
def test_mutual_information_is_between_zero_and_predictive_entropy(probs):
    probs = jnp.asarray(probs)
    mi = np.asarray(uncertainty.mutual_information(probs))
    entropy = np.asarray(uncertainty.normalized_entropy(uncertainty.predictive_mean(probs)))
    assert mi.shape == probs.shape[1:2]
    assert np.all(mi >= 0.0)
    assert np.all(mi <= entropy + 1e-7)
    # H(mean_t p_t) - mean_t H(p_t), normalized by log C.
    expected = _entropy64(np.asarray(probs, np.float64).mean(axis=0)) - _entropy64(probs).mean(axis=0)
    np.testing.assert_allclose(mi, np.maximum(expected, 0.0), atol=5e-6)


@SETTINGS
@given(mc_probs_arrays(passes=(1,)))
def test_mutual_information_is_zero_for_identical_passes(single):
    probs = jnp.asarray(np.repeat(single, PASSES[0], axis=0))
    np.testing.assert_allclose(uncertainty.mutual_information(probs), 0.0, atol=TOL)


def _binary_entropy(p):
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))  # log2: normalized for C = 2


def test_mutual_information_hand_example():
    # Sample 0: two confident passes that disagree: H(mean) = 1, mean H = 0, so BALD = 1.
    # Sample 1: passes agree, BALD = 0. Sample 2: passes [.5, .5] and [1, 0]: H([.75, .25]) - (1 + 0) / 2.
    probs = jnp.array([[[1.0, 0.0], [0.9, 0.1], [0.5, 0.5]], [[0.0, 1.0], [0.9, 0.1], [1.0, 0.0]]])
    expected = [1.0, 0.0, _binary_entropy(0.75) - 0.5]
    np.testing.assert_allclose(uncertainty.mutual_information(probs), expected, atol=TOL)


def _variation_ratio64(probs):
    num_passes, _, num_classes = probs.shape
    winners = probs.argmax(axis=-1)  # [T, N]
    votes = np.stack([np.bincount(column, minlength=num_classes) for column in winners.T])
    return 1.0 - votes.max(axis=-1) / num_passes


@SETTINGS
@given(mc_probs_arrays())
def test_variation_ratio_bounds_and_matches_numpy(probs):
    num_passes, _, num_classes = probs.shape
    ratio = np.asarray(uncertainty.variation_ratio(jnp.asarray(probs)))
    assert np.all(ratio >= 0.0)
    assert np.all(ratio <= 1.0 - 1.0 / num_classes + TOL)
    # The modal class gets at least ceil(T / C) of the T votes.
    assert np.all(ratio <= 1.0 - math.ceil(num_passes / num_classes) / num_passes + TOL)
    np.testing.assert_allclose(ratio, _variation_ratio64(probs), atol=TOL)


@SETTINGS
@given(mc_probs_arrays(), st.data())
def test_variation_ratio_is_zero_when_passes_agree_on_the_argmax(probs, data):
    num_passes, num_samples, num_classes = probs.shape
    winner = data.draw(hnp.arrays(np.int64, num_samples, elements=st.integers(0, num_classes - 1)))
    boosted = probs + 2.0 * _one_hot(winner, num_classes)[None]  # same argmax in every pass, any confidence
    np.testing.assert_array_equal(uncertainty.variation_ratio(jnp.asarray(boosted)), 0.0)


def test_variation_ratio_hand_example():
    # T = 4 passes, C = 3, per-pass winners: [0, 0, 1, 2] -> 1 - 2/4; [1, 1, 1, 1] -> 0;
    # [0, 1, 2, 0] -> 1 - 2/4, which is the largest possible for T = 4, C = 3: 1 - ceil(4/3)/4.
    winners = np.array([[0, 1, 0], [0, 1, 1], [1, 1, 2], [2, 1, 0]])  # [T, N]
    probs = 0.1 + 0.7 * _one_hot(winners, 3)
    np.testing.assert_allclose(uncertainty.variation_ratio(jnp.asarray(probs)), [0.5, 0.0, 0.5], atol=TOL)
    # T = 5, C = 4: votes [3, 3, 0, 1, 2] -> 1 - 2/5.
    probs = _one_hot(np.array([[3], [3], [0], [1], [2]]), 4)
    np.testing.assert_allclose(uncertainty.variation_ratio(jnp.asarray(probs)), [0.6], atol=TOL)


@SETTINGS
@given(mc_probs_arrays())
def test_stats_from_probs_combines_the_scores(probs):
    probs = jnp.asarray(probs)
    stats = uncertainty.stats_from_probs(probs)
    assert isinstance(stats, uncertainty.UncertaintyStats)
    mean = uncertainty.predictive_mean(probs)
    np.testing.assert_array_equal(stats.mean_probs, mean)
    np.testing.assert_array_equal(stats.entropy, uncertainty.normalized_entropy(mean))
    np.testing.assert_array_equal(stats.mutual_information, uncertainty.mutual_information(probs))
    np.testing.assert_array_equal(stats.variation_ratio, uncertainty.variation_ratio(probs))


def _random_probs(seed, shape=(PASSES[0], NUM_SAMPLES, 10)):
    logits = np.random.default_rng(seed).normal(scale=3.0, size=shape).astype(np.float32)
    return jnp.asarray(_softmax(logits))


@pytest.mark.parametrize(
    "fn,on_mean",
    [
        (uncertainty.normalized_entropy, True),
        (uncertainty.mutual_information, False),
        (uncertainty.variation_ratio, False),
        (uncertainty.stats_from_probs, False),
    ],
    ids=["entropy", "bald", "variation_ratio", "stats"],
)
def test_jit_equals_eager(fn, on_mean):
    jitted = jax.jit(fn)
    for seed in range(3):
        probs = _random_probs(seed)
        x = probs.mean(axis=0) if on_mean else probs
        jax.tree_util.tree_map(
            functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7), jitted(x), fn(x)
        )


# ----------------------------------------------------------------------------------------------------------
# MC-dropout passes through the real networks


def _network(architecture):
    """(apply_fn, params, input shape) for the paper CNN on 28x28x1 images or the toy MLP on 2-D points."""
    return random_network(architecture, *((10, (28, 28, 1)) if architecture == "cnn" else (2, (2,))))


def _inputs(architecture, num_samples, seed=1):
    _, _, input_shape = _network(architecture)
    if architecture == "cnn":
        return jax.random.uniform(jax.random.key(seed), (num_samples, *input_shape))
    return 2.0 * jax.random.normal(jax.random.key(seed), (num_samples, *input_shape))


@pytest.mark.parametrize("architecture", ["mlp", "cnn"])
def test_mc_probs_equals_a_loop_over_split_keys(architecture):
    apply_fn, params, _ = _network(architecture)
    # Jitted: eagerly, every primitive of the network compiles on its own (seconds on CPU).
    mc_probs, apply = jax.jit(uncertainty.mc_probs, static_argnums=(0, 4)), jax.jit(apply_fn)
    x = _inputs(architecture, 3)
    key = jax.random.key(42)
    probs = mc_probs(apply_fn, params, x, key, 5)
    num_classes = 10 if architecture == "cnn" else 2
    assert probs.shape == (5, 3, num_classes)
    loop = jnp.stack([jax.nn.softmax(apply(params, x, k), axis=-1) for k in jax.random.split(key, 5)])
    np.testing.assert_allclose(probs, loop, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    # Dropout is on: the passes differ.
    for t in range(1, 5):
        assert not np.allclose(probs[0], probs[t])
    # Deterministic given the key.
    np.testing.assert_array_equal(mc_probs(apply_fn, params, x, key, 5), probs)
    assert not np.allclose(mc_probs(apply_fn, params, x, jax.random.key(43), 5), probs)
    if architecture == "mlp":  # no pass is the deterministic network (for the CNN: models_test)
        assert not np.allclose(probs[0], jax.nn.softmax(apply(params, x), axis=-1))


# ----------------------------------------------------------------------------------------------------------
# algorithm.pool_stats for one run (R = 1): chunked, compiled once, independent of the chunk size


def _assert_stats_close(actual, expected, atol=1e-6):
    for name, a, e in zip(uncertainty.UncertaintyStats._fields, actual, expected):
        if a is None or e is None:  # `custom`: only with a score of the user's
            assert a is None and e is None, name
            continue
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=atol, err_msg=name)


POOL_SIZE = 37
MC_PASSES = 4


def _pool_stats(apply_fn, params, pool, key, chunk_size, seed_axis="map"):
    """One run's scores, fields [N, ...]: `algorithm.pool_stats` with a single seed over a shared pool."""
    stats = algorithm.pool_stats(apply_fn, algorithm.stack([params]), pool, key[None], MC_PASSES, chunk_size,
                                 shared=True, seed_axis=seed_axis)
    assert stats.entropy.shape == (1, pool.shape[0])
    return algorithm.unstack(stats, 0)


# Several chunks, the last one padded, against a single chunk holding the whole pool (padded for the MLP,
# exact for the CNN). Each chunk size compiles once, in seconds; for the CNN also the pool is kept small.
@pytest.mark.parametrize("architecture,pool_size,chunk_sizes", [("mlp", POOL_SIZE, (7, 40)), ("cnn", 13, (4, 13))])
def test_pool_stats_does_not_depend_on_chunk_size(architecture, pool_size, chunk_sizes):
    apply_fn, params, _ = _network(architecture)
    pool = _inputs(architecture, pool_size)
    key = jax.random.key(5)
    results = [_pool_stats(apply_fn, params, pool, key, size) for size in chunk_sizes]
    num_classes = 10 if architecture == "cnn" else 2
    assert results[0].mean_probs.shape == (pool_size, num_classes)
    assert results[0].custom is None  # no score of the user's
    for field in results[0][1:4]:
        assert field.shape == (pool_size,)
    for other in results[1:]:
        _assert_stats_close(other, results[0])
    # Dropout really acts: the passes disagree somewhere in the pool.
    assert np.any(np.asarray(results[0].mutual_information) > 0)


@pytest.mark.parametrize("seed_axis", algorithm.SEED_AXES)
def test_pool_stats_uses_per_sample_keys_folded_from_the_pool_index(seed_axis):
    apply_fn, params, _ = _network("mlp")
    pool = _inputs("mlp", POOL_SIZE)
    key = jax.random.key(9)
    stats = _pool_stats(apply_fn, params, pool, key, chunk_size=7, seed_axis=seed_axis)

    @jax.jit
    def one_sample(x, sample_key):
        return uncertainty.stats_from_probs(uncertainty.mc_probs(apply_fn, params, x, sample_key, MC_PASSES))

    for i in (0, 6, 7, POOL_SIZE - 1):  # first and second chunk, last (padded) chunk
        expected = one_sample(pool[i : i + 1], jax.random.fold_in(key, i))
        _assert_stats_close([None if field is None else field[i : i + 1] for field in stats], expected)
    # A different key gives different scores.
    other = _pool_stats(apply_fn, params, pool, jax.random.key(10), chunk_size=7, seed_axis=seed_axis)
    assert not np.allclose(other.mean_probs, stats.mean_probs)


def test_pool_stats_accepts_numpy_pools_and_matches_device_arrays():
    apply_fn, params, _ = _network("mlp")
    pool = _inputs("mlp", POOL_SIZE)
    key = jax.random.key(2)
    from_numpy = _pool_stats(apply_fn, params, np.asarray(pool), key, chunk_size=7)
    _assert_stats_close(from_numpy, _pool_stats(apply_fn, params, pool, key, chunk_size=7))


def test_pool_stats_compiles_once_for_different_pool_sizes():
    base_apply, params, _ = _network("mlp")
    traces = []

    def apply_fn(params, x, key=None):  # a fresh static argument: nothing cached for it yet
        traces.append(x.shape)  # runs only while tracing
        return base_apply(params, x, key)

    large_pool = _inputs("mlp", 83)
    key = jax.random.key(0)
    with count_compilations() as compiled:
        first = _pool_stats(apply_fn, params, large_pool[:50], key, chunk_size=8)
        traces_after_first = len(traces)  # the body may run more than once per trace (nested vmaps)
        assert traces_after_first >= 1
        second = _pool_stats(apply_fn, params, large_pool, key, chunk_size=8)
    assert len(traces) == traces_after_first  # 7 chunks, then 11 chunks: no retrace
    assert compiled[algorithm.seeds_chunk_stats.__name__] == 1
    assert first.entropy.shape == (50,) and second.entropy.shape == (83,)
    # A sample's scores depend on its index, not on the pool size.
    _assert_stats_close([None if field is None else field[:50] for field in second], first)


@pytest.mark.parametrize("seed_axis", algorithm.SEED_AXES)
def test_pool_stats_without_dropout_are_the_deterministic_networks_softmax(seed_axis):
    """config.pool_dropout = False: T' = 1 pass of the network without dropout, whatever the key: eq. 7's mean is
    softmax(apply_fn(params, x)), its entropy eq. 3's, BALD and the variation ratio 0; T' > 1 is refused."""
    apply_fn, params, _ = _network("mlp")
    pool = _inputs("mlp", POOL_SIZE)
    stats = [algorithm.unstack(algorithm.pool_stats(apply_fn, algorithm.stack([params]), pool, jax.random.key(k)[None],
                                                    1, 8, shared=True, seed_axis=seed_axis, dropout=False), 0)
             for k in (3, 4)]
    for a, b in zip(stats[0], stats[1]):
        assert (a is None and b is None) or np.array_equal(a, b)
    softmax = jax.nn.softmax(jax.jit(apply_fn)(params, pool), axis=-1)
    np.testing.assert_allclose(stats[0].mean_probs, softmax, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats[0].entropy, _entropy64(np.asarray(softmax, np.float64)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats[0].mutual_information, 0.0, atol=1e-6)
    np.testing.assert_array_equal(stats[0].variation_ratio, 0.0)
    with pytest.raises(ValueError, match="one pass"):
        uncertainty.chunk_stats(apply_fn, params, pool[:8], jnp.arange(8, dtype=jnp.uint32), jax.random.key(0), 2,
                                dropout=False)


def test_pool_stats_rejects_an_empty_pool():
    apply_fn, params, _ = _network("mlp")
    with pytest.raises(ValueError, match="empty"):
        _pool_stats(apply_fn, params, jnp.zeros((0, 2)), jax.random.key(0), chunk_size=8)


# ----------------------------------------------------------------------------------------------------------
# chunks.pad_rows, chunks.padded_chunks


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 20), st.sampled_from([1, 3, 8]), st.sampled_from([0, 1]))
def test_padded_chunks_cover_the_array_with_zero_padding(num_rows, chunk_size, axis):
    array = np.arange(1, 3 * num_rows + 1, dtype=np.int32).reshape(num_rows, 3)  # no zero rows
    array = array if axis == 0 else np.stack([array, -array])  # [2, N, 3]: chunks along the sample axis 1
    chunks = list(padded_chunks(array, chunk_size, axis))
    assert len(chunks) == -(-num_rows // chunk_size)
    rows = []
    for position, (start, chunk, valid) in enumerate(chunks):
        assert start == position * chunk_size
        assert chunk.shape[axis] == chunk_size and chunk.dtype == jnp.int32
        assert valid == min(chunk_size, num_rows - start)
        real, padding = np.split(np.asarray(chunk), [valid], axis=axis)
        np.testing.assert_array_equal(padding, 0)
        rows.append(real)
    if num_rows:
        np.testing.assert_array_equal(np.concatenate(rows, axis=axis), array)
        assert all(valid == chunk_size for _, _, valid in chunks[:-1])


@pytest.mark.parametrize("chunk_size", [0, -3])
def test_padded_chunks_rejects_chunk_size_below_one(chunk_size):
    with pytest.raises(ValueError, match="chunk_size"):
        list(padded_chunks(np.zeros((4, 2)), chunk_size))


def test_pad_rows_pads_host_and_device_pieces_alike_and_host_pieces_compile_nothing_new():
    piece = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    for axis in (0, 1):
        expected = np.asarray(jnp.pad(jnp.asarray(piece), [(0, 5 - piece.shape[0] if axis == 0 else 0),
                                                           (0, 5 - piece.shape[1] if axis == 1 else 0), (0, 0)]))
        np.testing.assert_array_equal(pad_rows(piece, 5, axis), expected)
        np.testing.assert_array_equal(pad_rows(jnp.asarray(piece), 5, axis), expected)
    full = np.ones((4, 3), np.float32)
    pad_rows(full, 4)  # the one shape every padded host piece is sent with
    with count_compilations() as compiled:  # host pieces of any length: padded on the host, sent at that shape
        padded = [pad_rows(full[:rows], 4) for rows in (1, 2, 3)]
    assert compiled.total() == 0, dict(compiled)
    for rows, chunk in zip((1, 2, 3), padded):
        np.testing.assert_array_equal(np.asarray(chunk), np.concatenate([full[:rows], np.zeros((4 - rows, 3))]))
