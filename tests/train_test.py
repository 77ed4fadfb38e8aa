"""Training: sampling plans, the jitted step (compiles once), and a real supervised MNIST fit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepbass_jax import data, models, train


def _toy_state(seed=0, dropout=True):
    config = models.default_config()
    config.architecture = "mlp"
    module = models.build(config, 2)
    apply_fn = models.make_apply(module)
    if not dropout:
        stochastic_apply = apply_fn
        apply_fn = lambda params, x, key=None: stochastic_apply(params, x)  # noqa: E731
    params = models.init_params(module, jax.random.key(seed), (2,))
    return train.create_train_state(apply_fn, params, jax.random.key(seed + 1), train.default_config())


def test_sampling_plan_upsamples_ground_truth_and_takes_pseudo_labels_once():
    labeled = np.array([True, False, False, True, False])
    selected = np.array([False, True, False, False, True])
    indices, weights = train.sampling_plan(labeled, selected, jax.random.key(0), upsample=20, pseudo_weight=0.5)
    counts = np.bincount(indices, minlength=5)
    np.testing.assert_array_equal(counts, [20, 1, 0, 20, 1])
    np.testing.assert_array_equal(weights[np.isin(indices, [0, 3])], 1.0)
    np.testing.assert_array_equal(weights[np.isin(indices, [1, 4])], 0.5)
    assert indices.dtype == np.int32 and weights.dtype == np.float32


def test_sampling_plan_is_shuffled_and_seeded():
    labeled = np.zeros(100, bool)
    labeled[:10] = True
    selected = ~labeled
    a, _ = train.sampling_plan(labeled, selected, jax.random.key(1))
    b, _ = train.sampling_plan(labeled, selected, jax.random.key(1))
    c, _ = train.sampling_plan(labeled, selected, jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, np.sort(a))


def test_sampling_plan_refuses_to_overwrite_ground_truth():
    labeled = np.array([True, False])
    with pytest.raises(ValueError, match="ground truth"):
        train.sampling_plan(labeled, labeled.copy(), jax.random.key(0))


def test_epoch_compiles_once_when_the_plan_size_changes():
    state = _toy_state()
    images = jnp.asarray(np.random.default_rng(0).normal(size=(300, 2)), jnp.float32)
    targets = jnp.asarray(np.arange(300) % 2, jnp.int32)
    labeled = np.zeros(300, bool)
    labeled[:8] = True
    # Warm up, then change the plan's size twice: one trace in total.
    for num_selected in (17, 100, 292):
        selected = ~labeled & (np.arange(300) < 8 + num_selected)
        indices, weights = train.sampling_plan(labeled, selected, jax.random.key(num_selected), upsample=20)
        state, metrics = train.train_epoch(state, images, targets, indices, weights, batch_size=64)
        if num_selected == 17:
            traces_after_first_epoch = train.batch_step._cache_size()
        assert metrics.steps == -(-indices.shape[0] // 64)
    assert train.batch_step._cache_size() == traces_after_first_epoch
    assert int(state.step) == sum(-(-(160 + n) // 64) for n in (17, 100, 292))


def test_padding_does_not_change_the_update():
    """A batch padded with weight-0 entries gives the same step as the unpadded batch (dropout off, since
    masks are drawn for the batch shape)."""
    images = jnp.asarray(np.random.default_rng(1).normal(size=(10, 2)), jnp.float32)
    targets = jnp.asarray(np.arange(10) % 2, jnp.int32)
    indices = np.arange(6, dtype=np.int32)
    weights = np.ones(6, np.float32)
    unpadded, metrics_a = train.train_epoch(_toy_state(dropout=False), images, targets, indices, weights, 6)
    padded, metrics_b = train.train_epoch(_toy_state(dropout=False), images, targets, indices, weights, 16)
    assert metrics_a.steps == metrics_b.steps == 1
    assert metrics_a.loss == pytest.approx(metrics_b.loss, rel=1e-6)
    assert metrics_a.accuracy == metrics_b.accuracy
    for a, b in zip(jax.tree_util.tree_leaves(unpadded.params), jax.tree_util.tree_leaves(padded.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_train_step_uses_a_fresh_dropout_key_each_step():
    state = _toy_state()
    images = jnp.ones((4, 2), jnp.float32)
    targets = jnp.zeros(4, jnp.int32)
    idx = np.arange(4, dtype=np.int32)
    w = np.ones(4, np.float32)
    state, first = train.train_step(state, images, targets, idx, w)
    state, second = train.train_step(state, images, targets, idx, w)
    assert int(state.step) == 2
    assert float(first.loss) != float(second.loss)


def test_empty_plan_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        train.train_epoch(
            _toy_state(), jnp.zeros((3, 2)), jnp.zeros(3, jnp.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
        )


def test_supervised_fit_on_1000_real_mnist_images_reaches_90_percent(mnist_dir):
    dataset = data.load_idx_dir("mnist", mnist_dir)
    chosen = data.balanced_initial_labels(dataset.train_labels, per_class=100, seed=0)
    images = jnp.asarray(dataset.train_images[chosen])
    targets = jnp.asarray(dataset.train_labels[chosen])
    module = models.build(models.default_config(), dataset.num_classes)
    apply_fn = models.make_apply(module)
    params = models.init_params(module, jax.random.key(0), dataset.input_shape)
    config = train.default_config()
    config.upsample = 1
    state = train.create_train_state(apply_fn, params, jax.random.key(1), config)
    state, metrics = train.fit(
        state, images, targets, np.ones(len(chosen), bool), jax.random.key(2), epochs=40, config=config
    )
    test_accuracy = train.accuracy(apply_fn, state.params, dataset.test_images, dataset.test_labels)
    assert metrics.accuracy > 0.9  # training accuracy under dropout
    assert test_accuracy >= 0.90, f"test accuracy {test_accuracy:.4f} on the 10,000 MNIST test images"
