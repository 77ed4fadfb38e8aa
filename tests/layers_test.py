"""The fast layers compute the same functions (and exact gradients) as the XLA/flax defaults they replace."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from jax import lax

from deepbass_jax import layers


def _reference_conv(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@settings(max_examples=8, deadline=None)
@given(
    num=st.integers(1, 9),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    channels_in=st.sampled_from([1, 3]),
    channels_out=st.sampled_from([1, 4]),
    rows_per_step=st.sampled_from([1, 40, 7200]),
    seed=st.integers(0, 2**16),
)
def test_conv3x3_kernel_grad_matches_autodiff_of_xla_conv(
    num, height, width, channels_in, channels_out, rows_per_step, seed
):
    rng = np.random.default_rng(seed)  # numpy draws: jax.random would compile for every example's shapes
    x, dy, kernel = (rng.standard_normal(shape, np.float32) for shape in (
        (num, height, width, channels_in), (num, height, width, channels_out), (3, 3, channels_in, channels_out)))
    expected, dk, ours = _conv3x3_and_xla_gradients(x, dy, kernel, rows_per_step)
    np.testing.assert_allclose(dk, expected["dk"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours["dx"], expected["dx"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours["dk"], expected["dk"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours["y"], expected["y"], rtol=1e-5, atol=1e-5)


@functools.partial(jax.jit, static_argnums=3)  # one program per example's shapes (op by op: about 12 each)
def _conv3x3_and_xla_gradients(x, dy, kernel, rows_per_step):
    """({y, dx, dk} of XLA's convolution, conv3x3_kernel_grad's dk, {y, dx, dk} of layers.conv3x3) for output
    cotangent dy."""
    results = []
    for conv in (_reference_conv, layers.conv3x3):
        y, vjp = jax.vjp(conv, x, kernel)
        dx, dk = vjp(dy)
        results.append({"y": y, "dx": dx, "dk": dk})
    return results[0], layers.conv3x3_kernel_grad(x, dy, rows_per_step), results[1]


def test_conv3x3_gradient_under_jit_and_vmap_matches_xla():
    x = jax.random.normal(jax.random.key(0), (3, 4, 10, 10, 2))  # a vmapped axis of 3 batches
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 2, 5))

    def loss(conv, x, kernel):
        return jnp.sum(jnp.sin(conv(x, kernel)))

    ours = jax.jit(jax.vmap(jax.grad(lambda x, k: loss(layers.conv3x3, x, k), argnums=(0, 1))))(x, kernel)
    theirs = jax.vmap(jax.grad(lambda x, k: loss(_reference_conv, x, k), argnums=(0, 1)))(x, kernel)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv3x3_module_has_nn_conv_parameters_and_output():
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
    ours = layers.Conv3x3(4, kernel_init=nn.initializers.glorot_uniform())
    theirs = nn.Conv(4, (3, 3), padding="SAME", kernel_init=nn.initializers.glorot_uniform())
    params = ours.init(jax.random.key(1), x)
    reference = theirs.init(jax.random.key(1), x)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, reference)
    params = jax.tree_util.tree_map(lambda p: p + 0.1, params)  # non-zero bias
    np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 7, 5, 2), (3, 28, 28, 16)])
def test_max_pool_2x2_matches_flax_in_value_and_gradient(shape):
    x = jax.random.normal(jax.random.key(0), shape)  # continuous values: no ties
    reference = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))  # noqa: E731
    np.testing.assert_array_equal(layers.max_pool_2x2(x), reference(x))
    weights = jax.random.normal(jax.random.key(1), reference(x).shape)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(layers.max_pool_2x2(x) * weights)))(x)
    expected = jax.grad(lambda x: jnp.sum(reference(x) * weights))(x)
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


def test_max_pool_2x2_splits_the_gradient_of_ties_and_conserves_it():
    x = jnp.zeros((1, 2, 2, 1))
    grad = jax.grad(lambda x: layers.max_pool_2x2(x).sum())(x)
    assert float(grad.sum()) == pytest.approx(1.0)
    assert np.all(np.asarray(grad) >= 0)


@pytest.mark.parametrize("rate", [0.01, 0.33, 0.9])
def test_hash_keep_mask_rate_and_determinism(rate):
    seed = jnp.array([7, 11], jnp.uint32)
    keep = np.asarray(jax.jit(layers.hash_keep_mask, static_argnums=(0, 2))((64, 28, 28, 4), seed, rate))
    again = np.asarray(layers.hash_keep_mask((64, 28, 28, 4), seed, rate))
    np.testing.assert_array_equal(keep, again)
    std = np.sqrt(rate * (1 - rate) / keep.size)
    assert abs((1 - keep.mean()) - rate) < 5 * std
    other = np.asarray(layers.hash_keep_mask((64, 28, 28, 4), jnp.array([7, 12], jnp.uint32), rate))
    agree = np.mean(keep == other)
    expected = rate**2 + (1 - rate) ** 2
    assert abs(agree - expected) < 5 * np.sqrt(expected * (1 - expected) / keep.size)


def test_hash_keep_mask_is_the_flat_counter_hash():
    # Element i of the mask depends on its flat index only: the same seed gives the same flat mask
    # whatever shape it is drawn in (so a mask is independent of how a batch is laid out).
    seed = jnp.array([3, 5], jnp.uint32)
    flat = np.asarray(layers.hash_keep_mask((6 * 10 * 4,), seed, 0.5))
    shaped = np.asarray(layers.hash_keep_mask((6, 10, 4), seed, 0.5))
    np.testing.assert_array_equal(shaped.ravel(), flat)


def test_resolve_kernels_picks_by_backend():
    assert layers.resolve_kernels("auto", "cpu") == "cpu_tuned"
    assert layers.resolve_kernels("auto", "gpu") == "xla"
    assert layers.resolve_kernels("auto", "tpu") == "xla"
    assert layers.resolve_kernels("xla", "cpu") == "xla"
    assert layers.resolve_kernels("cpu_tuned", "gpu") == "cpu_tuned"
    with pytest.raises(ValueError, match="model.kernels='cudnn' is unknown"):
        layers.resolve_kernels("cudnn")


def test_paper_cnn_kernel_choices_give_the_same_values_and_gradients():
    """Every `model.kernels` choice computes the same network: logits and the gradient of a loss with respect to
    parameters and input agree within round-off, with and without dropout."""
    from deepbass_jax import models

    x = jax.random.uniform(jax.random.key(0), (6, 28, 28, 1))
    tuned, xla = (models.PaperCNN(num_classes=10, kernels=k) for k in ("cpu_tuned", "xla"))
    params = models.init_params(tuned, jax.random.key(1), (28, 28, 1))
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
        models.init_params(xla, jax.random.key(1), (28, 28, 1)))

    def loss(module, params, x, key):
        logits = models.make_apply(module)(params, x, key)
        return jnp.sum(jax.nn.log_softmax(logits)[:, 3]) + jnp.sum(jnp.sin(logits))

    for key in (None, jax.random.key(2)):
        np.testing.assert_allclose(models.make_apply(tuned)(params, x, key), models.make_apply(xla)(params, x, key),
                                   rtol=1e-5, atol=1e-5)
        ours = jax.jit(jax.grad(lambda p, x: loss(tuned, p, x, key), argnums=(0, 1)))(params, x)
        theirs = jax.jit(jax.grad(lambda p, x: loss(xla, p, x, key), argnums=(0, 1)))(params, x)
        for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def _group_counts(lowered_text: str) -> set:
    """The group counts above 1 of a lowered program's convolutions (feature or batch group count)."""
    counts = re.findall(r"(?:feature|batch)_group_count = (\d+)", lowered_text)
    return {int(count) for count in counts} - {1}


def test_seeds_per_block_is_the_largest_divisor_within_the_limit():
    assert [layers.seeds_per_block(10, most) for most in (0, 1, 2, 3, 4, 5, 9, 10, 12)] \
        == [10, 1, 2, 2, 2, 5, 5, 10, 10]
    assert [layers.seeds_per_block(7, most) for most in (0, 2, 5)] == [7, 1, 1]
    assert layers.seeds_per_block(1, 5) == 1


@pytest.mark.parametrize("kernels, groups", [("block_diagonal", set()), ("block_diagonal_2", {2}),
                                             ("block_diagonal_5", set())])
@pytest.mark.parametrize("in_axes", [(0, 0), (0, None), (None, 0)])
def test_seed_block_conv_equals_xla_under_vmap_in_value_and_gradient(in_axes, kernels, groups):
    """Four seeds batched in input and kernel (the training case), in the input alone, or in the kernel alone: values
    and both gradients equal XLA's within round-off, and with both batched the convolutions have 4 / g groups (g the
    seeds per block: none grouped for one block of all four), where XLA's batching makes 4."""
    x = jax.random.normal(jax.random.key(0), (4, 4, 9, 7, 2) if in_axes[0] == 0 else (4, 9, 7, 2))
    kernel = jax.random.normal(jax.random.key(1), (4, 3, 3, 2, 5) if in_axes[1] == 0 else (3, 3, 2, 5))
    conv = layers.CONV3X3[kernels]

    def value_and_grad(conv):
        loss = lambda x, k: jnp.sum(jnp.sin(conv(x, k)))  # noqa: E731
        return jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1)), in_axes=in_axes))

    ours, theirs = value_and_grad(conv), value_and_grad(layers.conv3x3_xla)
    for a, b in zip(jax.tree_util.tree_leaves(ours(x, kernel)), jax.tree_util.tree_leaves(theirs(x, kernel))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(jax.vmap(conv, in_axes)(x, kernel), jax.vmap(layers.conv3x3_xla, in_axes)(x, kernel),
                               rtol=1e-5, atol=1e-5)
    if in_axes == (0, 0):
        assert _group_counts(ours.lower(x, kernel).as_text()) == groups
        assert _group_counts(theirs.lower(x, kernel).as_text()) == {4}


@pytest.mark.parametrize("kernels", ["block_diagonal", "block_diagonal_2"])
def test_seed_block_conv_per_example_gradients_inside_a_seed_vmap(kernels):
    """Nested vmaps (seeds outside, examples inside: each rule also sees arrays batched in one argument only and
    falls back to XLA's batching there) stay exact."""
    x = jax.random.normal(jax.random.key(0), (2, 4, 1, 6, 6, 2))  # [seeds, examples, 1, H, W, I]
    kernel = jax.random.normal(jax.random.key(1), (2, 3, 3, 2, 4))

    def per_example_grads(conv):
        loss = lambda x, k: jnp.sum(jnp.tanh(conv(x, k)))  # noqa: E731
        return jax.jit(jax.vmap(jax.vmap(jax.grad(loss, argnums=1), in_axes=(0, None))))(x, kernel)

    np.testing.assert_allclose(per_example_grads(layers.CONV3X3[kernels]), per_example_grads(layers.conv3x3_xla),
                               rtol=1e-4, atol=1e-4)


def _trained_seeds(kernels: str, num_seeds: int = 4, steps: int = 3, batch: int = 8, side: int = 16):
    """`num_seeds` seeds of the paper CNN after `steps` Adam steps at once under vmap (algorithm.seeds_train_steps):
    (parameters, summed losses)."""
    from deepbass_jax import algorithm, models, train

    images = jax.random.uniform(jax.random.key(0), (32, side, side, 1))
    targets = jnp.tile(jnp.arange(32, dtype=jnp.int32) % 10, (num_seeds, 1))
    indices = np.random.default_rng(0).integers(0, 32, (steps, num_seeds, batch)).astype(np.int32)
    plan = (indices, np.ones((steps, num_seeds, batch), np.float32), np.zeros((steps, num_seeds, batch), bool),
            np.ones((steps, num_seeds), bool))
    module = models.PaperCNN(num_classes=10, kernels=kernels)
    apply_fn = models.make_apply(module)
    states = algorithm.stack([algorithm.initial_train_state(module, apply_fn, jax.random.key(seed), (side, side, 1),
                                                            train.default_config()) for seed in range(num_seeds)])
    states, totals = algorithm.seeds_train_steps(states, train.StepMetrics.zeros(num_seeds), images, targets,
                                                 *plan, shared_images=True, seed_axis="vmap")
    return states.params, totals.loss


def _seed_gradients(kernels: str, num_seeds: int = 4, batch: int = 8, side: int = 16):
    """`num_seeds` paper CNNs' parameter gradients taken at once under vmap, without dropout (whose zeros make
    ties in the max-pools that round-off can break either way): the jitted function and its arguments."""
    from deepbass_jax import algorithm, models

    apply_fn = models.make_apply(models.PaperCNN(num_classes=10, kernels=kernels))
    params = algorithm.stack([models.init_params(models.PaperCNN(num_classes=10), jax.random.key(seed), (side, side, 1))
                              for seed in range(num_seeds)])  # the same for every choice of kernels
    images = jax.random.uniform(jax.random.key(2), (num_seeds, batch, side, side, 1))
    loss = lambda p, x: jnp.sum(jnp.sin(apply_fn(p, x)))  # noqa: E731
    return jax.jit(jax.vmap(jax.grad(loss))), (params, images)


@pytest.mark.parametrize("kernels, groups", [("block_diagonal", set()), ("block_diagonal_2", {2})])
def test_seed_blocks_differentiate_seeds_at_once_as_xla_does_with_fewer_groups(kernels, groups):
    """Four seeds of the paper CNN at once under vmap, in one dense block of all seeds or in blocks of two: their
    gradients equal XLA's within round-off and the program's convolutions have no groups or 2, where XLA's have 4."""
    (ours, our_args), (theirs, their_args) = _seed_gradients(kernels), _seed_gradients("xla")
    for a, b in zip(jax.tree_util.tree_leaves(ours(*our_args)), jax.tree_util.tree_leaves(theirs(*their_args))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert _group_counts(ours.lower(*our_args).as_text()) == groups
    assert _group_counts(theirs.lower(*their_args).as_text()) == {4}


def test_seed_blocks_train_seeds_at_once_as_xla_does():
    """Three Adam steps with dropout of four seeds at once (algorithm.seeds_train_steps) in blocks of two seeds (the
    general case of the seed-block code) give XLA's losses, and its parameters within a tenth of the learning rate:
    Adam moves a parameter by about the learning rate whatever its gradient's size, so the round-off of a gradient
    near zero shows there as up to a few percent of it (3e-5 for one entry with one block of all four)."""
    (ours, our_loss), (theirs, their_loss) = _trained_seeds("block_diagonal_2"), _trained_seeds("xla")
    np.testing.assert_allclose(our_loss, their_loss, rtol=1e-5)
    learning_rate = 1e-3  # train.default_config()
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)):
        np.testing.assert_allclose(a, b, rtol=0, atol=learning_rate / 10)
