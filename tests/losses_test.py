"""Losses: the weighted cross-entropy of eqs. 2/6 and Keras-style L2 on kernels only."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from deepbass_jax import losses, models


def _batch(seed=0, batch=8, num_classes=5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(batch, num_classes)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=batch).astype(np.int32)
    return logits, labels


def _hand_nll(logits, labels):
    """-log softmax(logits)[label] per sample, in float64 numpy."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -log_softmax[np.arange(len(labels)), labels]


def test_cross_entropy_with_unit_weights_is_the_mean_negative_log_softmax():
    logits, labels = _batch()
    loss = losses.cross_entropy(logits, labels, np.ones(len(labels), np.float32))
    assert loss.shape == ()
    np.testing.assert_allclose(loss, _hand_nll(logits, labels).mean(), rtol=1e-5)


def test_cross_entropy_small_hand_example():
    logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0]], np.float32)  # softmax: [.5,.5], [.75,.25]
    labels = np.array([0, 1], np.int32)
    expected = (-np.log(0.5) - np.log(0.25)) / 2
    np.testing.assert_allclose(losses.cross_entropy(logits, labels, np.ones(2, np.float32)), expected, rtol=1e-6)


def test_cross_entropy_matches_optax():
    logits, labels = _batch(seed=1, batch=16, num_classes=10)
    expected = optax.softmax_cross_entropy(logits, jax.nn.one_hot(labels, 10)).mean()
    np.testing.assert_allclose(losses.cross_entropy(logits, labels, jnp.ones(16)), expected, rtol=1e-6)


def test_zero_weight_padding_does_not_change_the_loss():
    logits, labels = _batch(seed=2, batch=6)
    real = losses.cross_entropy(logits, labels, np.ones(6, np.float32))
    pad_logits = np.concatenate([logits, np.full((4, logits.shape[1]), 7.0, np.float32)])
    pad_logits[-4:, 0] = -50.0  # padding rows with a huge loss for label 0
    pad_labels = np.concatenate([labels, np.zeros(4, np.int32)])
    weights = np.concatenate([np.ones(6), np.zeros(4)]).astype(np.float32)
    np.testing.assert_allclose(losses.cross_entropy(pad_logits, pad_labels, weights), real, rtol=1e-6)


def test_all_zero_weights_give_zero_not_nan():
    logits, labels = _batch(seed=3)
    assert float(losses.cross_entropy(logits, labels, np.zeros(len(labels), np.float32))) == 0.0


@pytest.mark.parametrize("mu", [0.1, 0.5, 2.0])
def test_weight_mu_scales_a_samples_contribution(mu):
    # Eq. 6: pseudo-labeled samples enter the sum with weight mu; the normalizer counts samples with w > 0.
    logits, labels = _batch(seed=4, batch=6)
    nll = _hand_nll(logits, labels)
    weights = np.array([1, 1, 1, mu, mu, 0], np.float32)
    expected = (nll[:3].sum() + mu * nll[3:5].sum()) / 5
    np.testing.assert_allclose(losses.cross_entropy(logits, labels, weights), expected, rtol=1e-5)
    # Raising one sample's weight by mu - 1 adds exactly (mu - 1) * its loss / count.
    ones = np.ones(6, np.float32)
    bumped = ones.copy()
    bumped[2] = mu
    delta = losses.cross_entropy(logits, labels, bumped) - losses.cross_entropy(logits, labels, ones)
    np.testing.assert_allclose(delta, (mu - 1) * nll[2] / 6, rtol=1e-4, atol=1e-6)


def test_cross_entropy_jit_equals_eager():
    logits, labels = _batch(seed=5)
    weights = np.array([1, 0.5, 0, 1, 1, 0.3, 1, 0], np.float32)
    eager = losses.cross_entropy(logits, labels, weights)
    np.testing.assert_allclose(jax.jit(losses.cross_entropy)(logits, labels, weights), eager, rtol=1e-6)


def test_l2_penalty_on_hand_built_params_counts_kernels_only():
    params = {
        "Dense_0": {"kernel": jnp.array([[1.0, 2.0], [3.0, 0.0]]), "bias": jnp.array([100.0, 100.0])},
        "block": {"Conv_0": {"kernel": jnp.full((3, 3, 1, 2), 0.5), "bias": jnp.array([50.0, -50.0])}},
    }
    expected = 0.01 * ((1 + 4 + 9) + 18 * 0.25)
    np.testing.assert_allclose(losses.l2_penalty(params, 0.01), expected, rtol=1e-6)
    no_kernels = {"Dense_0": {"bias": jnp.ones(3)}}
    assert float(losses.l2_penalty(no_kernels, 0.01)) == 0.0


def _paper_cnn_params(seed=0):
    """Random values in the PaperCNN parameter tree (structure from tracing init, to skip compiling it)."""
    module = models.build(models.default_config(), 10)
    shapes = jax.eval_shape(lambda key: models.init_params(module, key, (28, 28, 1)), jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)


def test_l2_penalty_on_paper_cnn_includes_all_five_kernels():
    params = _paper_cnn_params()
    kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params) if path[-1].key == "kernel"]
    assert len(kernels) == 5
    expected = 1e-3 * sum(float(np.sum(np.square(np.asarray(k, np.float64)))) for k in kernels)
    np.testing.assert_allclose(losses.l2_penalty(params, 1e-3), expected, rtol=1e-5)
    # Biases are ignored even when non-zero; every kernel contributes.
    with_biases = jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf + 3.0 if path[-1].key == "bias" else leaf, params
    )
    np.testing.assert_allclose(losses.l2_penalty(with_biases, 1e-3), expected, rtol=1e-5)
    for layer in params:
        zeroed = {**params, layer: {**params[layer], "kernel": jnp.zeros_like(params[layer]["kernel"])}}
        assert float(losses.l2_penalty(zeroed, 1e-3)) < expected * (1 - 1e-4), layer


def test_l2_penalty_is_linear_in_weight_and_differentiable():
    params = {"Dense_0": {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([4.0, 5.0])}}
    np.testing.assert_allclose(losses.l2_penalty(params, 0.2), 2 * losses.l2_penalty(params, 0.1), rtol=1e-6)
    grads = jax.grad(lambda p: losses.l2_penalty(p, 0.1))(params)
    np.testing.assert_allclose(grads["Dense_0"]["kernel"], 0.2 * params["Dense_0"]["kernel"], rtol=1e-6)
    np.testing.assert_array_equal(grads["Dense_0"]["bias"], 0.0)
