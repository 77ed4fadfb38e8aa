"""Training: sampling plans, the jitted step (compiles once), epochs of one run through `algorithm.train_epoch`,
the initial fit's stopping rule, and a real supervised MNIST fit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepbass_jax import algorithm, data, models, train
from tests.compilations import count_compilations


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


def _epoch(states, images, targets, indices, weights, batch_size, seed_axis="map"):
    """One epoch of one run: `algorithm.train_epoch` with a single seed (states stacked, R = 1) on a shared pool
    images [N, ...] with targets [N]; returns (states, EpochMetrics or None)."""
    states, [metrics] = algorithm.train_epoch(states, images, jnp.asarray(targets)[None], [(indices, weights)],
                                              batch_size, shared=True, seed_axis=seed_axis)
    return states, metrics


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


@pytest.mark.parametrize("seed_axis", ["map", "vmap"])
def test_steps_per_call_changes_nothing_but_the_dispatch(seed_axis):
    """Two seeds with plans of 7 and 4 steps (no-op steps for the second) trained one step per call, 3 per call
    (3 + 3 + 1) or all at once: the same states bit for bit; the same epoch metrics, under vmap the mean loss
    within round-off (its batch sums may be ordered otherwise inside the scan)."""
    images = jnp.asarray(np.random.default_rng(0).normal(size=(300, 2)), jnp.float32)
    targets = jnp.asarray(np.stack([np.arange(300) % 2, (np.arange(300) // 7) % 2]), jnp.int32)
    rng = np.random.default_rng(1)
    plans = [(rng.integers(0, 300, n).astype(np.int32), rng.uniform(0.5, 1.0, n).astype(np.float32))
             for n in (7 * 32 - 5, 4 * 32)]
    results = []
    for steps_per_call in (1, 3, 7):
        states = algorithm.stack([_toy_state(0), _toy_state(1)])
        states, metrics = algorithm.train_epoch(states, images, targets, plans, 32, shared=True, seed_axis=seed_axis,
                                                steps_per_call=steps_per_call)
        results.append((jax.tree_util.tree_leaves((states.step, states.params, states.opt_state)), metrics))
    assert [m.steps for m in results[0][1]] == [7, 4]
    for leaves, metrics in results[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(results[0][0], leaves))
        if seed_axis == "map":
            assert metrics == results[0][1]
        for ours, expected in zip(metrics, results[0][1]):
            assert (ours.accuracy, ours.steps) == (expected.accuracy, expected.steps)
            assert ours.loss == pytest.approx(expected.loss, rel=1e-6)


def test_epochs_compile_two_programs_whatever_the_plan_size():
    """The K-step program and the one-step program (for an epoch's last steps) compile once each; epochs of
    other plan sizes compile nothing."""
    states = algorithm.stack([_toy_state()])
    images = jnp.asarray(np.random.default_rng(0).normal(size=(300, 2)), jnp.float32)
    targets = jnp.asarray(np.arange(300) % 2, jnp.int32)
    labeled = np.zeros(300, bool)
    labeled[:8] = True

    def epoch(states, num_selected):
        selected = ~labeled & (np.arange(300) < 8 + num_selected)
        indices, weights = train.sampling_plan(labeled, selected, jax.random.key(num_selected), upsample=20)
        states, [metrics] = algorithm.train_epoch(states, images, targets[None], [(indices, weights)], 64,
                                                  shared=True, seed_axis="map", steps_per_call=4)
        assert metrics.steps == -(-indices.shape[0] // 64)
        return states

    with count_compilations() as compiled:
        for num_selected in (17, 100):  # 3 steps of 64 (3 x 1), 5 steps (4 + 1)
            states = epoch(states, num_selected)
    assert compiled[algorithm.seeds_train_steps.__name__] <= 2
    with count_compilations() as compiled:
        states = epoch(states, 292)  # 8 steps: 2 x 4
    assert compiled[algorithm.seeds_train_steps.__name__] == 0
    assert int(states.step[0]) == sum(-(-(160 + n) // 64) for n in (17, 100, 292))


@pytest.mark.parametrize("seed_axis", algorithm.SEED_AXES)
def test_padding_does_not_change_the_update(seed_axis):
    """A batch padded with weight-0 entries gives the same step as the unpadded batch (dropout off, since
    masks are drawn for the batch shape)."""
    images = jnp.asarray(np.random.default_rng(1).normal(size=(10, 2)), jnp.float32)
    targets = jnp.asarray(np.arange(10) % 2, jnp.int32)
    indices = np.arange(6, dtype=np.int32)
    weights = np.ones(6, np.float32)
    fresh = lambda: algorithm.stack([_toy_state(dropout=False)])  # noqa: E731
    unpadded, metrics_a = _epoch(fresh(), images, targets, indices, weights, 6, seed_axis)
    padded, metrics_b = _epoch(fresh(), images, targets, indices, weights, 16, seed_axis)
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


def test_an_empty_plan_takes_no_step():
    """A seed whose plan is empty (one that stopped fitting) keeps its state and reports no metrics."""
    states = algorithm.stack([_toy_state()])
    params = jax.device_get(states.params)
    empty = np.zeros(0, np.int32), np.zeros(0, np.float32)
    states, metrics = _epoch(states, jnp.zeros((3, 2)), jnp.zeros(3, jnp.int32), *empty, batch_size=64)
    assert metrics is None and int(states.step[0]) == 0
    for a, b in zip(jax.tree_util.tree_leaves(states.params), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_a_non_finite_loss_is_an_error():
    state = _toy_state()
    states = algorithm.stack([state.replace(params=jax.tree_util.tree_map(lambda p: p * jnp.nan, state.params))])
    with pytest.raises(FloatingPointError, match=r"^training loss became nan\.$"):
        _epoch(states, jnp.ones((4, 2)), jnp.zeros(4, jnp.int32), np.arange(4, dtype=np.int32), np.ones(4, np.float32),
               batch_size=4)


def test_patience_stops_once_accuracy_has_not_exceeded_its_best_for_that_many_epochs():
    # Best 0.7 at epoch 1 and 0.8 at epoch 4; an accuracy equal to the best is no progress.
    accuracies = [0.5, 0.7, 0.7, 0.6, 0.8, 0.75, 0.8, 0.79]
    patience, stops = algorithm.Patience(), {2: [], 3: []}
    for accuracy in accuracies:
        patience = patience.update(accuracy)
        for epochs in stops:
            stops[epochs].append(patience.stop(epochs))
    assert stops[2] == [False, False, False, True, False, False, True, True]
    assert stops[3] == [False] * 7 + [True]
    assert patience == algorithm.Patience(0.8, 3)
    assert patience.update(0.81) == algorithm.Patience(0.81, 0)  # progress resets the count
    assert algorithm.Patience().update(0.0) == algorithm.Patience(0.0, 0)  # the first epoch sets the best


def test_patience_zero_never_stops():
    patience = algorithm.Patience()
    for _ in range(50):
        patience = patience.update(0.5)
    assert patience.since_best == 49 and not patience.stop(0)


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
    states = algorithm.stack([train.create_train_state(apply_fn, params, jax.random.key(1), config)])
    labeled = np.ones(len(chosen), bool)
    for epoch in range(40):  # the initial fit without patience: every epoch over the (upsampled) ground truth
        indices, weights = train.sampling_plan(labeled, ~labeled, jax.random.fold_in(jax.random.key(2), epoch),
                                               config.upsample)
        states, metrics = _epoch(states, images, targets, indices, weights, config.batch_size)
    [test_accuracy] = algorithm.seeds_accuracy(apply_fn, states.params, dataset.test_images, dataset.test_labels,
                                               shared=True, seed_axis="map")
    assert metrics.accuracy > 0.9  # training accuracy under dropout
    assert test_accuracy >= 0.90, f"test accuracy {test_accuracy:.4f} on the 10,000 MNIST test images"


def test_fit_on_keeps_each_seed_fitting_until_its_own_patience_runs_out():
    """The initial fit over seeds: a seed that stopped gets no epoch metrics (None) and stays stopped; the others
    update their own Patience."""
    epoch = lambda accuracy: train.EpochMetrics(loss=0.0, accuracy=accuracy, steps=1)  # noqa: E731
    patience, fitting = [algorithm.Patience()] * 2, [True, True]
    for first, second in [(0.5, 0.5), (0.6, 0.5), (0.7, 0.5)]:  # seed 1 stagnates for 2 epochs
        patience, fitting = algorithm.fit_on(patience, [epoch(first), epoch(second)], limit=2)
    assert fitting == [True, False] and patience == [algorithm.Patience(0.7, 0), algorithm.Patience(0.5, 2)]
    patience, fitting = algorithm.fit_on(patience, [epoch(0.6), None], limit=2)
    assert fitting == [True, False] and patience[1] == algorithm.Patience(0.5, 2)  # stopped: unchanged
    assert algorithm.fit_on(patience, [epoch(0.1), epoch(0.1)], limit=0)[1] == [True, True]  # 0: never stops
