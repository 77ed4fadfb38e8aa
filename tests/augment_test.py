"""Ground-truth augmentation (section 5): the affine warp, its randomness, and that training warps only ground truth."""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from deepbass_jax import algorithm, augment, config as config_lib, driver as driver_lib, models, train
from experiments.configs import yinyang as yinyang_configs


def _images(batch=4, height=9, width=9, channels=1, seed=0):
    """Uniform [0, 1) images [B, H, W, C] (numpy's generator: no compilation per shape)."""
    return jnp.asarray(np.random.default_rng(seed).random((batch, height, width, channels), np.float32))


def _square(size=29, side=8):
    """One image [1, size, size, 1] with a centered side x side square of ones (size - side even)."""
    image = np.zeros((1, size, size, 1), np.float32)
    start = (size - side) // 2
    image[0, start : start + side, start : start + side] = 1.0
    return jnp.asarray(image)


# Jitted: op-by-op dispatch would compile every primitive separately (seconds per new shape on 2 cores).
_transform = jax.jit(augment.transform)
_random_affine = jax.jit(augment.random_affine, static_argnames=("max_degrees", "max_scale", "max_shift"))
_random_affine_where = jax.jit(augment.random_affine_where, static_argnames=("max_degrees", "max_scale", "max_shift"))


def _warp(images, degrees=0.0, scale_h=1.0, scale_w=1.0):
    batch = images.shape[0]
    return _transform(images, *(np.full(batch, v, np.float32) for v in (degrees, scale_h, scale_w)))


# ------------------------------------------------------------------------------------------ the warp
def test_off_returns_the_input_itself():
    x = _images()
    assert augment.random_affine(x, jax.random.key(0), 0.0, 0.0) is x
    assert augment.random_affine(x, jax.random.key(0), 0.0, 0.0, 0.0) is x
    assert augment.random_affine_where(x, jnp.ones(4, bool), jax.random.key(0), 0, 0) is x


@pytest.mark.parametrize("size", [7, 8])
def test_90_degrees_is_rot90_counter_clockwise(size):
    """Positive angles turn counter-clockwise as displayed (row 0 on top): +90 is np.rot90, -90 its inverse."""
    x = _images(batch=2, height=size, width=size, channels=2)
    np.testing.assert_allclose(_warp(x, 90.0), np.rot90(np.asarray(x), k=1, axes=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(_warp(x, -90.0), np.rot90(np.asarray(x), k=-1, axes=(1, 2)), atol=1e-5)
    np.testing.assert_array_equal(_warp(x, 0.0), x)  # angle 0, scale 1: integer coordinates, exact


@pytest.mark.parametrize("scale_h, scale_w", [(1.25, 1.0), (1.0, 1.25), (0.75, 1.0), (1.1, 0.9)])
def test_scaling_resizes_a_centered_square_along_the_right_axis(scale_h, scale_w):
    warped = np.asarray(_warp(_square(), scale_h=scale_h, scale_w=scale_w))[0, ..., 0]
    center = 14
    # Bilinear sampling of a box: the profile through the centre integrates to about side * factor.
    assert warped[:, center].sum() == pytest.approx(8 * scale_h, abs=0.3)  # height
    assert warped[center, :].sum() == pytest.approx(8 * scale_w, abs=0.3)  # width
    assert warped.sum() == pytest.approx(64 * scale_h * scale_w, rel=0.06)


@pytest.mark.parametrize("rows, cols", [(2, 0), (0, -3), (1, 2), (-4, -1)])
def test_a_whole_pixel_shift_moves_the_image_down_and_right_with_zero_fill(rows, cols):
    x = np.asarray(_images(batch=2, height=9, width=8, channels=2))
    shift = lambda value: np.full(2, value, np.float32)  # noqa: E731
    out = np.asarray(_transform(jnp.asarray(x), shift(0.0), shift(1.0), shift(1.0), shift(rows), shift(cols)))
    expected = np.zeros_like(x)
    height, width = x.shape[1:3]
    expected[:, max(rows, 0): height + min(rows, 0), max(cols, 0): width + min(cols, 0)] = \
        x[:, max(-rows, 0): height - max(rows, 0), max(-cols, 0): width - max(cols, 0)]
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_random_shifts_are_fractions_of_height_and_width_and_leave_the_other_parameters_alone():
    x = _images(batch=256, height=20, width=10)
    rows, cols = (np.asarray(v) for v in augment.random_shifts(jax.random.key(0), 256, 20, 10, 0.1))
    assert -2.0 <= rows.min() < -1.6 and 1.6 < rows.max() <= 2.0  # U(-0.1, 0.1) x 20 px
    assert -1.0 <= cols.min() < -0.8 and 0.8 < cols.max() <= 1.0  # U(-0.1, 0.1) x 10 px
    # Shifts on top of the same key's rotations and scalings: those are the ones random_affine draws without.
    key = jax.random.key(7)
    shifted = _random_affine(x, key, 10.0, 0.05, 0.1)
    by_hand = _transform(x, *augment.random_parameters(key, 256, 10.0, 0.05),
                         *augment.random_shifts(key, 256, 20, 10, 0.1))
    np.testing.assert_array_equal(shifted, by_hand)
    np.testing.assert_array_equal(_random_affine(x, key, 10.0, 0.05, 0.0),
                                  _transform(x, *augment.random_parameters(key, 256, 10.0, 0.05)))
    only_shift = np.asarray(_random_affine(x, key, 0.0, 0.0, 0.1))  # shifts alone are augmentation too
    assert not np.array_equal(only_shift, np.asarray(x))
    with pytest.raises(ValueError, match="max_shift=0.5"):
        augment.random_affine(x, key, 0.0, 0.0, 0.5)


def test_outputs_stay_within_the_input_range():
    x = _images(batch=64, height=12, width=10, seed=3)
    out = _random_affine(x, jax.random.key(1), 30.0, 0.3)
    assert float(out.min()) >= 0.0  # zero fill, convex bilinear weights
    assert float(out.max()) <= float(x.max()) + 1e-6


def test_same_key_same_output_other_key_other_output():
    x = _images(batch=8)
    a = _random_affine(x, jax.random.key(5), 10.0, 0.05)
    b = _random_affine(x, jax.random.key(5), 10.0, 0.05)
    c = _random_affine(x, jax.random.key(6), 10.0, 0.05)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_parameters_are_drawn_per_sample_within_their_ranges():
    degrees, scale_h, scale_w = augment.random_parameters(jax.random.key(0), 256, 10.0, 0.05)
    for values, low, high in ((degrees, -10, 10), (scale_h, 0.95, 1.05), (scale_w, 0.95, 1.05)):
        values = np.asarray(values)
        assert values.shape == (256,) and len(np.unique(values)) == 256
        assert low <= values.min() < low + 0.1 * (high - low) and high - 0.1 * (high - low) < values.max() <= high
    assert not np.allclose(scale_h, scale_w)  # height and width are drawn independently
    same = jnp.broadcast_to(_images(batch=1), (6, 9, 9, 1))  # one image six times: six different warps
    out = np.asarray(_random_affine(same, jax.random.key(2), 10.0, 0.05)).reshape(6, -1)
    assert len({row.tobytes() for row in out}) == 6


def test_mask_leaves_the_other_rows_bitwise_unchanged():
    x = _images(batch=6)
    mask = jnp.array([True, False, True, False, False, True])
    out = np.asarray(_random_affine_where(x, mask, jax.random.key(0), 10.0, 0.05))
    np.testing.assert_array_equal(out[~np.asarray(mask)], np.asarray(x)[~np.asarray(mask)])
    for row in np.flatnonzero(mask):
        assert not np.array_equal(out[row], np.asarray(x)[row])


def test_vmap_under_jit_matches_one_call_per_batch():
    x = _images(batch=3)
    stacked, keys = jnp.stack([x, x + 0.1]), jax.random.split(jax.random.key(4), 2)
    mapped = jax.jit(jax.vmap(lambda images, k: augment.random_affine(images, k, 10.0, 0.05)))(stacked, keys)
    for i in range(2):
        np.testing.assert_allclose(mapped[i], _random_affine(stacked[i], keys[i], 10.0, 0.05), atol=1e-6)
    assert not np.allclose(mapped[0], stacked[0])


def test_non_image_input_is_refused():
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        augment.random_affine(jnp.zeros((4, 2)), jax.random.key(0), 10.0, 0.0)


@settings(max_examples=12, deadline=None)
@given(
    half_height=st.integers(1, 5), half_width=st.integers(1, 5), channels=st.sampled_from([1, 3]),
    degrees=st.floats(-179, 179), scale_h=st.floats(0.5, 1.5), scale_w=st.floats(0.5, 1.5), seed=st.integers(0, 99),
)
def test_property_any_warp_keeps_shape_range_and_the_centre_pixel(half_height, half_width, channels, degrees,
                                                                  scale_h, scale_w, seed):
    """With odd sides the centre pixel maps onto itself whatever the angle and scales."""
    height, width = 2 * half_height + 1, 2 * half_width + 1
    x = _images(batch=2, height=height, width=width, channels=channels, seed=seed)
    out = np.asarray(_warp(x, degrees, scale_h, scale_w))
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= float(x.max()) + 1e-6
    np.testing.assert_allclose(out[:, half_height, half_width], np.asarray(x)[:, half_height, half_width], atol=1e-5)


# ------------------------------------------------------------------------------------------ training
def _image_state(seed=0, height=8, width=8):
    config = models.default_config()
    config.architecture = "mlp"  # flattens [H, W, C]: a fast network on images
    module = models.build(config, 2)
    params = models.init_params(module, jax.random.key(seed), (height, width, 1))
    return train.create_train_state(models.make_apply(module), params, jax.random.key(seed + 1),
                                    train.default_config())


def _augmenting(degrees=10.0, scale=0.05, upsample=3, batch_size=16):
    config = train.default_config()
    config.augment_degrees, config.augment_scale = degrees, scale
    config.upsample, config.batch_size = upsample, batch_size
    return config


def _pool(num=40, seed=0):
    return _images(num, 8, 8, 1, seed), jnp.asarray(np.arange(num) % 2, jnp.int32)


def _epoch(states, images, targets, plan, labeled, degrees=10.0, scale=0.05, batch_size=16):
    """One epoch of one run: `algorithm.train_epoch` with a single seed (R = 1) on the shared pool."""
    states, [metrics] = algorithm.train_epoch(states, images, targets[None], [plan], batch_size, shared=True,
                                              seed_axis="map", labeled=None if labeled is None else labeled[None],
                                              augment_degrees=degrees, augment_scale=scale)
    return states, metrics


def test_epoch_warps_ground_truth_entries_only(monkeypatch):
    images, targets = _pool()
    labeled = np.zeros(40, bool)
    labeled[:6] = True
    selected = ~labeled & (np.arange(40) < 30)
    indices, weights = train.sampling_plan(labeled, selected, jax.random.key(0), upsample=3)
    batches = []
    original = train.gather_batch

    def record(batch_indices, x):
        batches.append((np.asarray(batch_indices), np.asarray(x)))

    def spy(images, targets, batch_indices, *args, **kwargs):  # runs while the step is traced
        x, y = original(images, targets, batch_indices, *args, **kwargs)
        jax.debug.callback(record, batch_indices, x, ordered=True)  # runs at every step
        return x, y

    monkeypatch.setattr(train, "gather_batch", spy)
    state = _image_state()
    apply_fn = state.apply_fn
    # A new (unequal) apply function: the step is traced anew, through the spy, not taken from the cache.
    state = state.replace(apply_fn=lambda params, x, key=None: apply_fn(params, x, key))
    _, metrics = _epoch(algorithm.stack([state]), images, targets, (indices, weights), labeled)
    jax.effects_barrier()
    assert metrics.steps == len(batches) == -(-(18 + 24) // 16) and np.isfinite(metrics.loss)
    rows = np.concatenate([i for i, _ in batches])[: len(indices)]
    gathered = np.concatenate([x for _, x in batches])[: len(indices)]
    np.testing.assert_array_equal(rows, indices)
    unchanged = np.all(gathered == np.asarray(images)[rows], axis=(1, 2, 3))
    np.testing.assert_array_equal(unchanged, ~labeled[rows])  # pseudo-labeled: as given; ground truth: warped
    # Each view of a ground-truth sample gets its own warp.
    views = gathered[rows == np.flatnonzero(labeled)[0]].reshape(3, -1)
    assert len({v.tobytes() for v in views}) == 3


def _fit(labeled, config, serialize=False):
    """Two epochs of the initial fit (every plan entry ground truth); with `serialize`, the states go through a
    checkpoint's state dict after each epoch, as a resumed run's do."""
    images, targets = _pool()
    states = algorithm.stack([_image_state()])
    for epoch in range(2):
        plan = train.sampling_plan(labeled, np.zeros_like(labeled), jax.random.fold_in(jax.random.key(3), epoch),
                                   config.upsample)
        states, metrics = _epoch(states, images, targets, plan, labeled, config.augment_degrees, config.augment_scale,
                                 config.batch_size)
        if serialize:
            raw = states.replace(dropout_key=jax.random.key_data(states.dropout_key))
            raw = flax.serialization.from_state_dict(raw, jax.device_get(flax.serialization.to_state_dict(raw)))
            states = jax.device_put(raw.replace(dropout_key=jax.random.wrap_key_data(raw.dropout_key)))
    return states, metrics


def test_fit_with_augmentation_trains_and_repeats_bitwise_after_a_checkpoint_round_trip():
    labeled = np.arange(40) < 10
    one_go, metrics = _fit(labeled, _augmenting())
    assert metrics.steps == -(-30 // 16) and np.isfinite(metrics.loss) and int(one_go.step[0]) == 4
    # The state serialized between the epochs (as a checkpoint does): the same warps, bitwise.
    resumed, _ = _fit(labeled, _augmenting(), serialize=True)
    for a, b in zip(jax.tree_util.tree_leaves(one_go.params), jax.tree_util.tree_leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)
    plain, _ = _fit(labeled, _augmenting(0.0, 0.0))
    assert not np.array_equal(jax.tree_util.tree_leaves(plain.params)[0], jax.tree_util.tree_leaves(one_go.params)[0])


def test_augmentation_needs_the_labeled_mask():
    images, targets = _pool()
    plan = np.arange(4, dtype=np.int32), np.ones(4, np.float32)
    with pytest.raises(ValueError, match="labeled"):
        _epoch(algorithm.stack([_image_state()]), images, targets, plan, None, 10.0, 0.0)


# ------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("field, value", [("augment_degrees", -1.0), ("augment_degrees", 180.0),
                                          ("augment_scale", -0.01), ("augment_scale", 1.0),
                                          ("augment_shift", -0.01), ("augment_shift", 0.5),
                                          ("augment_degrees", float("nan"))])
def test_validation_rejects_out_of_range_values_naming_the_field(field, value):
    config = config_lib.default_config()
    config.train[field] = value
    with pytest.raises(config_lib.ConfigError, match=rf"config\.train\.{field}=.* it must be in \["):
        config_lib.validate(config)


def test_validation_accepts_the_papers_setting():
    config = config_lib.default_config()
    config.train.augment_degrees, config.train.augment_scale = 9.9, 0.05
    config_lib.validate(config)


def _toy_with_augmentation():
    config = yinyang_configs.get_config()
    config.data.num_per_class = 20
    config.train.augment_degrees = 5.0
    return config


def test_driver_refuses_augmentation_of_non_image_data(tmp_path):
    with pytest.raises(config_lib.ConfigError, match=r"config\.train\.augment_degrees=5\.0 .* shape \(2,\); set them to 0"):
        driver_lib.Driver(_toy_with_augmentation(), tmp_path)


# ------------------------------------------------------------------------ the strong view (consistency)
STRONG = augment.StrongView(25.0, 0.2, 0.125, 0.3)
_two_views = jax.jit(augment.two_views, static_argnames=("max_degrees", "max_scale", "max_shift", "strong"))


def test_two_views_leave_plain_rows_warp_weak_rows_as_the_ground_truth_and_strong_rows_harder():
    images = _images(batch=6, height=28, width=28)
    views = jnp.array([0, 1, 2, 0, 1, 2])
    key = jax.random.key(4)
    out = np.asarray(_two_views(images, views, key, 10.0, 0.05, 0.1, STRONG))
    np.testing.assert_array_equal(out[[0, 3]], np.asarray(images)[[0, 3]])
    weak = np.asarray(_random_affine(images, key, 10.0, 0.05, 0.1))
    np.testing.assert_allclose(out[[1, 4]], weak[[1, 4]], atol=1e-6)
    assert not np.allclose(out[[2, 5]], weak[[2, 5]]) and out.min() >= 0 and out.max() <= 1


def test_cutout_zeroes_one_square_of_the_asked_side():
    ones = jnp.ones((8, 28, 28, 1), jnp.float32)
    cut = np.asarray(jax.jit(augment.cutout, static_argnames="size")(ones, jax.random.key(1), 0.5))
    zeroed = (cut == 0).sum(axis=(1, 2, 3))
    assert np.all(zeroed <= 14 * 14) and np.all(zeroed > 0)
    for image in cut[..., 0]:  # the zeros form one rectangle
        rows, cols = np.nonzero(image == 0)
        assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == len(rows)
    nothing = np.asarray(_two_views(ones, jnp.full(8, 2), jax.random.key(1), 0.0, 0.0, 0.0,
                                    augment.StrongView(0.0, 0.0, 0.0, 0.5)))
    assert np.all((nothing == 0).sum(axis=(1, 2, 3)) > 0)  # cutout alone, no warp: zeros inside ones


def test_strong_view_off_is_none_and_on_carries_the_fields():
    config = train.default_config()
    assert augment.strong_view(config) is None
    config.strong_augment = True
    assert augment.strong_view(config) == augment.StrongView(25.0, 0.2, 0.125, 0.3)


def _strong_epoch(states, images, targets, plan, labeled, strong):
    states, [metrics] = algorithm.train_epoch(states, images, targets[None], [plan], 16, shared=True, seed_axis="map",
                                              labeled=labeled[None], strong_view=strong)
    return states, metrics


def test_the_strong_view_changes_pseudo_labeled_entries_only():
    """Ground truth alone (augmentation off): bitwise the plain epoch; with pseudo-labels: another network."""
    images, targets = _pool()
    labeled = np.arange(40) < 10
    leaves = lambda states: jax.tree_util.tree_leaves(states.params)  # noqa: E731
    plan = train.sampling_plan(labeled, np.zeros(40, bool), jax.random.key(2), 2)
    plain, _ = _strong_epoch(algorithm.stack([_image_state()]), images, targets, plan, labeled, None)
    strong, _ = _strong_epoch(algorithm.stack([_image_state()]), images, targets, plan, labeled, STRONG)
    for a, b in zip(leaves(plain), leaves(strong)):
        np.testing.assert_array_equal(a, b)
    plan = train.sampling_plan(labeled, ~labeled, jax.random.key(2), 2)
    plain, _ = _strong_epoch(algorithm.stack([_image_state()]), images, targets, plan, labeled, None)
    strong, metrics = _strong_epoch(algorithm.stack([_image_state()]), images, targets, plan, labeled, STRONG)
    assert np.isfinite(metrics.loss) and not np.array_equal(leaves(plain)[0], leaves(strong)[0])


@pytest.mark.parametrize("field, value", [("strong_degrees", 180.0), ("strong_scale", 1.0), ("strong_shift", 0.5),
                                          ("strong_cutout", 1.5)])
def test_validation_rejects_out_of_range_strong_views(field, value):
    config = config_lib.default_config()
    config.train.strong_augment, config.train[field] = True, value
    with pytest.raises(config_lib.ConfigError, match=rf"config\.train\.{field}=.* it must be in \["):
        config_lib.validate(config)


def test_the_strong_view_needs_the_affine_warp():
    config = config_lib.default_config()
    augment.register_warp("strong_test_warp", augment.random_affine)
    config.train.strong_augment, config.train.augment_warp = True, "strong_test_warp"
    with pytest.raises(config_lib.ConfigError, match=r"config\.train\.augment_warp='strong_test_warp'.*'affine'"):
        config_lib.validate(config)
