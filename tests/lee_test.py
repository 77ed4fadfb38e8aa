"""The baselines without MC dropout: Lee (2013)'s Pseudo-Label (config.train.pseudo_targets = "step": targets
recomputed in every step by the deterministic network on the clean batch; config.train.pseudo_ramp_*: his alpha(t))
and pool inference without dropout (config.pool_dropout = False). Off by default, where the step is today's."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepbass_jax import algorithm, augment, config as config_lib, driver as driver_lib, losses, models, train
from tests.helpers import toy_config


def _state(pseudo_targets="iteration", seed=0, learning_rate=1e-3, input_shape=(2,)):
    """A fresh train state of the toy MLP (2 classes; it flattens samples of `input_shape`) with
    config.train.pseudo_targets = `pseudo_targets`."""
    model_config = models.default_config()
    model_config.architecture = "mlp"
    module = models.build(model_config, 2)
    config = train.default_config()
    config.pseudo_targets, config.learning_rate = pseudo_targets, learning_rate
    params = models.init_params(module, jax.random.key(seed), input_shape)
    return train.create_train_state(models.make_apply(module), params, jax.random.key(seed + 1), config)


def _copy(state):
    return jax.tree_util.tree_map(jnp.copy, state)  # batch_step donates its state


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@functools.partial(jax.jit, donate_argnums=0)
def _todays_batch_step(state, x, y, weights):
    """train.batch_step as it was before pseudo_targets: eq. 6's weighted cross-entropy plus L2, one Adam step."""
    key = jax.random.fold_in(state.dropout_key, state.step)

    def loss_fn(params):
        logits = state.apply_fn(params, x, key)
        return losses.cross_entropy(logits, y, weights) + losses.l2_penalty(params, state.l2_weight), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    valid = weights > 0
    return state.apply_gradients(grads), train.StepMetrics(loss, jnp.sum((logits.argmax(-1) == y) & valid),
                                                           jnp.sum(valid))


# ------------------------------------------------------------------------------------------- the defaults
def test_the_default_step_and_weights_are_todays_bit_for_bit():
    """pseudo_targets "iteration" and no ramp: train_step takes today's steps on a batch with ground truth
    (weight 1), pseudo-labels (mu 0.3) and padding, bitwise; mu is pseudo_weight in every iteration."""
    images = jnp.asarray(np.random.default_rng(0).normal(size=(40, 2)), jnp.float32)
    targets = jnp.asarray(np.arange(40) % 2, jnp.int32)
    ours, todays = _state(), _state()
    for step in range(3):
        indices = np.random.default_rng(step).integers(0, 40, 16).astype(np.int32)
        weights = np.where(np.arange(16) < 5, 1.0, 0.3).astype(np.float32)
        weights[-2:] = 0.0
        ours, our_metrics = train.train_step(ours, images, targets, indices, weights)
        x, y = train.gather_batch(images, targets, indices)
        todays, todays_metrics = _todays_batch_step(todays, x, y, weights)
        _assert_trees_equal((ours.params, ours.opt_state, our_metrics), (todays.params, todays.opt_state,
                                                                         todays_metrics))
    default = train.default_config()
    assert (default.pseudo_targets, default.pseudo_ramp_start, default.pseudo_ramp_end) == ("iteration", 0, 0)
    default.pseudo_weight = 0.3
    assert all(train.pseudo_weight_at(default, t) == 0.3 for t in range(300))
    run_state = algorithm.RunState(0, None, np.array([1, -1, -1, 0], np.int32), np.array([-1, 1, -1, -1], np.int32))
    np.testing.assert_array_equal(run_state.targets(), [1, 1, -1, 0])


# ----------------------------------------------------------------------------------- Lee's step targets
def test_step_targets_are_the_deterministic_argmax_and_ground_truth_keeps_its_labels():
    """The loss and gradient of a "step" step are those of the batch labeled by hand: rows with target -1 take the
    argmax of the deterministic network's logits, the others (ground truth) keep theirs, even where the network
    disagrees."""
    state = _state("step")
    x = jnp.asarray(2.0 * np.random.default_rng(1).normal(size=(24, 2)), jnp.float32)
    predicted = np.asarray(state.apply_fn(state.params, x).argmax(-1))
    y = np.where(np.arange(24) < 8, 1 - predicted, -1).astype(np.int32)  # ground truth against the network
    weights = np.where(np.arange(24) < 8, 1.0, 0.5).astype(np.float32)
    labels = train.step_targets(state.apply_fn, state.params, x, jnp.asarray(y))
    np.testing.assert_array_equal(labels, np.where(y < 0, predicted, y))
    assert len(np.unique(predicted[8:])) == 2  # both classes among the pseudo-labels

    grads, metrics = train.gradients(state, x, jnp.asarray(y), jnp.asarray(weights))
    key = jax.random.fold_in(state.dropout_key, state.step)

    def hand_loss(params):  # eq. 6 with Lee's labels, by hand
        log_probs = jax.nn.log_softmax(state.apply_fn(params, x, key))
        per_sample = -jnp.take_along_axis(log_probs, jnp.asarray(labels)[:, None], axis=1)[:, 0]
        return jnp.sum(weights * per_sample) / 24 + losses.l2_penalty(params, state.l2_weight)

    hand, hand_grads = jax.value_and_grad(hand_loss)(state.params)
    np.testing.assert_allclose(metrics.loss, hand, rtol=1e-6)
    for ours, theirs in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(hand_grads), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    as_given = train.gradients(state.replace(pseudo_targets="iteration"), x, labels, jnp.asarray(weights))
    _assert_trees_equal((grads, metrics), as_given)


def test_step_targets_come_from_the_clean_images_of_the_batch():
    """With the strong view on the pseudo-labeled rows (and augmentation of the ground truth), the step's labels are
    the network's on the unwarped images, its loss that of the warped ones."""
    images = jnp.asarray(np.random.default_rng(2).normal(size=(20, 8, 8, 1)), jnp.float32)
    targets = jnp.asarray(np.where(np.arange(20) < 6, np.arange(20) % 2, -1), jnp.int32)
    indices = np.arange(3, 19, dtype=np.int32)  # 3 ground-truth rows, 13 pseudo-labeled ones
    weights = np.ones(16, np.float32)
    views = np.where(indices < 6, augment.WEAK, augment.STRONG).astype(np.int32)
    strong = augment.StrongView(25.0, 0.2, 0.125, 0.3)
    warp = {"augment_degrees": 10.0, "augment_scale": 0.05, "augment_shift": 0.0, "augment_warp": "affine"}
    state = _state("step", input_shape=(8, 8, 1))  # the toy MLP flattens the images
    x, y = train.gather_batch(images, targets, indices, views, state.dropout_key, state.step, strong=strong, **warp)
    clean = images[indices]
    on_clean = np.asarray(state.apply_fn(state.params, clean).argmax(-1))
    assert not np.array_equal(on_clean, np.asarray(state.apply_fn(state.params, x).argmax(-1)))  # warps change some
    labels = jnp.asarray(np.where(np.asarray(y) < 0, on_clean, y), jnp.int32)
    expected, expected_metrics = train.batch_step(_copy(state).replace(pseudo_targets="iteration"), x, labels,
                                                  weights)
    ours, metrics = train.train_step(state, images, targets, indices, weights, views, strong=strong, **warp)
    _assert_trees_equal((ours.params, metrics), (expected.params, expected_metrics))


def test_step_targets_follow_the_network_from_step_to_step():
    """An epoch of two steps on the same batch: the second step's pseudo-labels are the network's after the first
    step, not those it had when the epoch began."""
    images = jnp.asarray(2.0 * np.random.default_rng(3).normal(size=(32, 2)), jnp.float32)
    start = _state("step", seed=4, learning_rate=0.3)
    before = np.asarray(start.apply_fn(start.params, images).argmax(-1))
    ground_truth = np.arange(32) < 4
    targets = jnp.asarray(np.where(ground_truth, 1 - before, -1), jnp.int32)  # the ground truth pulls it over
    batch = np.arange(32, dtype=np.int32)
    plan = (np.concatenate([batch, batch]), np.ones(64, np.float32))
    states, [epoch] = algorithm.train_epoch(algorithm.stack([_copy(start)]), images, targets[None], [plan], 32,
                                            shared=True, seed_axis="map")
    assert epoch.steps == 2

    expected = _copy(start).replace(pseudo_targets="iteration")
    labels_per_step = []
    for _ in range(2):
        labels = np.where(ground_truth, 1 - before, np.asarray(expected.apply_fn(expected.params, images).argmax(-1)))
        labels_per_step.append(labels)
        expected, _ = train.batch_step(expected, images, jnp.asarray(labels, jnp.int32), np.ones(32, np.float32))
    assert not np.array_equal(labels_per_step[0], labels_per_step[1])  # the first step moved some pseudo-labels
    for ours, theirs in zip(jax.tree_util.tree_leaves(algorithm.unstack(states, 0).params),
                            jax.tree_util.tree_leaves(expected.params), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------------------------------------- the ramp
def test_the_ramp_of_mu_before_within_and_after():
    """Lee's alpha(t) / alpha_f: 0 before start, linear from start to end, 1 from end on; mu = pseudo_weight x it."""
    assert [losses.ramp(t, 10, 20) for t in (0, 9, 10, 12, 15, 19, 20, 21, 200)] == [
        0.0, 0.0, 0.0, 0.2, 0.5, 0.9, 1.0, 1.0, 1.0]
    assert [losses.ramp(t, 0, 4) for t in range(1, 7)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [losses.ramp(t, 5, 5) for t in (4, 5, 6)] == [0.0, 1.0, 1.0]  # a step at `end`
    assert [losses.ramp(t, 0, 0) for t in (0, 1, 200)] == [1.0, 1.0, 1.0]  # the default: no ramp
    config = train.default_config()
    config.pseudo_weight, config.pseudo_ramp_start, config.pseudo_ramp_end = 2.0, 10, 20
    assert [train.pseudo_weight_at(config, t) for t in (9, 15, 20)] == [0.0, 1.0, 2.0]
    indices, weights = train.sampling_plan(np.array([True, False]), np.array([False, True]), jax.random.key(0),
                                           upsample=2, pseudo_weight=train.pseudo_weight_at(config, 15))
    np.testing.assert_array_equal(weights[indices == 1], [1.0])


def test_a_balanced_plan_weighs_the_pseudo_labels_mu_times_the_ground_truth_in_all():
    """Lee's eq. 15: with `balance`, each pseudo-labeled entry weighs mu * upsample * |labeled| / |selected|, so the
    pseudo-labeled part sums to mu times the ground truth's entries; without, each weighs mu (eq. 6)."""
    labeled = np.zeros(50, bool)
    labeled[:4] = True
    selected = ~labeled
    selected[-6:] = False  # 40 pseudo-labeled samples
    indices, weights = train.sampling_plan(labeled, selected, jax.random.key(1), upsample=5, pseudo_weight=3.0,
                                           balance=True)
    assert len(indices) == 5 * 4 + 40
    np.testing.assert_allclose(weights[selected[indices]], 3.0 * 20 / 40)
    np.testing.assert_allclose(weights[selected[indices]].sum() / weights[labeled[indices]].sum(), 3.0)
    same_order, unbalanced = train.sampling_plan(labeled, selected, jax.random.key(1), upsample=5, pseudo_weight=3.0)
    np.testing.assert_array_equal(same_order, indices)
    np.testing.assert_array_equal(unbalanced[selected[indices]], 3.0)
    nothing = np.zeros(50, bool)  # the initial fit: no pseudo-labels, nothing to balance
    _, weights = train.sampling_plan(labeled, nothing, jax.random.key(1), upsample=5, pseudo_weight=3.0, balance=True)
    np.testing.assert_array_equal(weights, 1.0)


# ------------------------------------------------------------------------------------- validation
LEE_SETTINGS = {"mode": "all_data", "train.pseudo_targets": "step", "train.pseudo_ramp_start": 0,
                "train.pseudo_ramp_end": 4, "train.pseudo_weight": 3.0, "train.pseudo_balance": True,
                "pool_dropout": False, "mc_passes_pool": 1}


@pytest.mark.parametrize("fields,message", [
    ({"pool_dropout": False}, r"config\.mc_passes_pool=10 is invalid .*: it must be 1 when config\.pool_dropout is "
                              r"False .*; set --config\.mc_passes_pool to such a value\."),
    ({"train.pseudo_targets": "epoch"}, r"config\.train\.pseudo_targets='epoch' is invalid: it must be one of "
                                        r"\['iteration', 'step'\]"),
    ({"train.pseudo_ramp_start": 10, "train.pseudo_ramp_end": 5}, r"config\.train\.pseudo_ramp_end=5 is invalid"),
    ({"train.pseudo_ramp_start": -1}, r"config\.train\.pseudo_ramp_start=-1 is invalid"),
    ({"train.pseudo_targets": "step", "restart_epochs": 20}, r"config\.restart_epochs=20 is invalid"),
])
def test_settings_that_cannot_run_are_refused(fields, message):
    config = config_lib.default_config()
    config.update_from_flattened_dict(fields)
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config)


def test_the_baselines_settings_are_valid():
    config = config_lib.default_config()
    config.update_from_flattened_dict({**LEE_SETTINGS, "train.pseudo_ramp_end": 25})
    config_lib.validate(config)


# --------------------------------------------------------------------------------------- toy runs
def _softmax_of(driver):
    """The deterministic network's softmax over the pool [N, C], seed 0."""
    apply = jax.jit(driver.apply_fn)
    return np.asarray(jax.nn.softmax(apply(algorithm.unstack(driver.states.params, 0), driver.pool_images), axis=-1))


def test_a_toy_run_with_the_lee_presets_settings(tmp_path, monkeypatch):
    """Semi-supervised only, all data, Lee's targets and a ramp over iterations 0-4 to alpha_f = 3, balanced,
    pool inference without dropout: the pseudo-labels weigh 0.75, 1.5, 2.25, 3 times the ground truth in all; every
    step gets -1 for the pseudo-labeled samples' targets and the ground truth's labels; the pool's scores are the
    deterministic network's."""
    mus, epochs = [], []
    sampling_plan, train_epoch = train.sampling_plan, algorithm.train_epoch

    def recording_plan(labeled, selected, key, upsample=20, pseudo_weight=1.0, balance=False):
        indices, weights = sampling_plan(labeled, selected, key, upsample, pseudo_weight, balance)
        if selected.any():
            is_pseudo = selected[indices]
            mus.append(round(float(weights[is_pseudo].sum() / weights[~is_pseudo].sum()), 5))
        return indices, weights

    def recording_epoch(states, images, targets, plans, *args, **kwargs):
        epochs.append((np.asarray(targets), [np.asarray(plan[0]) for plan in plans]))
        return train_epoch(states, images, targets, plans, *args, **kwargs)

    monkeypatch.setattr(train, "sampling_plan", recording_plan)
    monkeypatch.setattr(algorithm, "train_epoch", recording_epoch)
    driver = driver_lib.Driver(toy_config("semi_supervised", **LEE_SETTINGS), tmp_path)
    summary = driver.run()
    assert driver.states.pseudo_targets == "step" and driver.iteration == 6
    assert mus == [0.75, 1.5, 2.25, 3.0, 3.0, 3.0]
    state = driver.seeds[0].state
    assert state.selected.sum() == (~state.labeled).sum() == 192  # all data: every unlabeled point is in D
    for targets, [plan_indices] in epochs[-6:]:  # the iterations' epochs
        np.testing.assert_array_equal(targets[0], np.where(state.labeled, state.ground_truth, -1))
        assert (targets[0][plan_indices] == -1).sum() == 192
    assert np.isfinite(summary["test_accuracy"])
    scores = driver.pool_scores  # one pass: no disagreement between passes (BALD 0 up to round-off)
    np.testing.assert_allclose(scores.mutual_information, 0.0, atol=1e-6)
    assert not scores.variation_ratio.any()
    final = driver._pool_stats(jnp.stack([jax.random.key(7)]))
    np.testing.assert_allclose(final.mean_probs[0], _softmax_of(driver), rtol=1e-5, atol=1e-6)


def test_a_toy_run_without_mc_dropout_in_pool_inference(tmp_path):
    """pool_dropout False, T' = 1: the run goes through, its pool scores are the deterministic network's softmax and
    its entropy, whatever the key, and eq. 4's pseudo-labels are that softmax's argmax."""
    driver = driver_lib.Driver(toy_config("semi_supervised", pool_dropout=False, mc_passes_pool=1), tmp_path)
    summary = driver.run()
    assert np.isfinite(summary["test_accuracy"]) and driver.iteration == 6
    stats = [driver._pool_stats(jnp.stack([jax.random.key(k)])) for k in (1, 2)]
    _assert_trees_equal(stats[0], stats[1])
    expected = _softmax_of(driver)
    np.testing.assert_allclose(stats[0].mean_probs[0], expected, rtol=1e-5, atol=1e-6)
    entropy = -(expected * np.log(expected)).sum(-1) / np.log(2)
    np.testing.assert_allclose(stats[0].entropy[0], entropy, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats[0].mutual_information, 0.0, atol=1e-6)
    assert not stats[0].variation_ratio.any()
