"""The paper's networks: parameter counts, layer shapes, initialization and the dropout switch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepbass_jax import models


@functools.lru_cache(maxsize=None)  # eager flax init compiles every op: build each network once
def _model(architecture="cnn", num_classes=10, input_shape=(28, 28, 1), seed=0):
    config = models.default_config()
    config.architecture = architecture
    module = models.build(config, num_classes)
    params = models.init_params(module, jax.random.key(seed), input_shape)
    return models.make_apply(module), params


def _kernels_and_biases(params):
    leaves = jax.tree_util.tree_leaves_with_path(params)
    kernels = [leaf for path, leaf in leaves if path[-1].key == "kernel"]
    biases = [leaf for path, leaf in leaves if path[-1].key == "bias"]
    return kernels, biases


def test_paper_cnn_has_14970_parameters_on_mnist():
    _, params = _model()
    assert models.count_params(params) == 14_970


def test_paper_cnn_layer_shapes_on_mnist():
    _, params = _model()
    shapes = {name: {k: v.shape for k, v in layer.items()} for name, layer in params.items()}
    assert shapes == {
        "Conv_0": {"kernel": (3, 3, 1, 16), "bias": (16,)},
        "Conv_1": {"kernel": (3, 3, 16, 16), "bias": (16,)},
        "Conv_2": {"kernel": (3, 3, 16, 16), "bias": (16,)},
        "Conv_3": {"kernel": (3, 3, 16, 16), "bias": (16,)},
        "Dense_0": {"kernel": (7 * 7 * 16, 10), "bias": (10,)},
    }


def test_paper_cnn_works_on_32x32x3_with_7_classes():
    # Shapes only (traced, not compiled): the CNN compiles slowly on CPU.
    module = models.build(models.default_config(), 7)
    params = jax.eval_shape(lambda key: models.init_params(module, key, (32, 32, 3)), jax.random.key(0))
    assert params["Conv_0"]["kernel"].shape == (3, 3, 3, 16)
    assert params["Dense_0"]["kernel"].shape == (8 * 8 * 16, 7)  # two 2x2 pools: 32 -> 8
    x = jax.ShapeDtypeStruct((5, 32, 32, 3), jnp.float32)
    apply_fn = models.make_apply(module)
    assert jax.eval_shape(apply_fn, params, x).shape == (5, 7)
    assert jax.eval_shape(apply_fn, params, x, jax.random.key(2)).shape == (5, 7)


def test_toy_mlp_layer_shapes():
    apply_fn, params = _model("mlp", num_classes=2, input_shape=(2,))
    shapes = [(params[f"Dense_{i}"]["kernel"].shape, params[f"Dense_{i}"]["bias"].shape) for i in range(4)]
    assert shapes == [((2, 50), (50,)), ((50, 50), (50,)), ((50, 50), (50,)), ((50, 2), (2,))]
    assert len(params) == 4
    assert models.count_params(params) == 2 * 50 + 50 + 2 * (50 * 50 + 50) + 50 * 2 + 2
    assert apply_fn(params, jnp.ones((3, 2))).shape == (3, 2)


@pytest.mark.parametrize("architecture,input_shape", [("cnn", (28, 28, 1)), ("mlp", (2,))])
def test_kernels_are_glorot_uniform_bounded_and_biases_zero(architecture, input_shape):
    _, params = _model(architecture, input_shape=input_shape, num_classes=10)
    kernels, biases = _kernels_and_biases(params)
    assert len(kernels) == len(biases) == (5 if architecture == "cnn" else 4)
    for kernel in kernels:
        receptive = int(np.prod(kernel.shape[:-2]))
        fan_in, fan_out = receptive * kernel.shape[-2], receptive * kernel.shape[-1]
        assert np.abs(np.asarray(kernel)).max() <= np.sqrt(6.0 / (fan_in + fan_out)) + 1e-7
    for bias in biases:
        np.testing.assert_array_equal(bias, 0.0)


def test_dense_kernel_has_glorot_variance():
    _, params = _model()
    kernel = np.asarray(params["Dense_0"]["kernel"])  # 784 x 10
    limit = np.sqrt(6.0 / (784 + 10))
    assert np.abs(kernel).max() <= limit
    # Uniform on [-limit, limit]: variance 2 / (fan_in + fan_out), mean 0; 7840 draws.
    np.testing.assert_allclose(kernel.var(), 2.0 / (784 + 10), rtol=0.05)
    assert abs(kernel.mean()) < 0.05 * limit
    # It fills the interval (not e.g. a normal clipped far inside it).
    assert np.abs(kernel).max() > 0.99 * limit


def test_init_is_seeded():
    _, a = _model(seed=3)
    _, b = _model(seed=3)
    _, c = _model(seed=4)
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(a["Dense_0"]["kernel"], c["Dense_0"]["kernel"])


@pytest.mark.parametrize("architecture,input_shape", [("cnn", (28, 28, 1)), ("mlp", (2,))])
def test_dropout_is_on_exactly_when_a_key_is_given(architecture, input_shape):
    apply_fn, params = _model(architecture, input_shape=input_shape)
    x = jax.random.normal(jax.random.key(10), (4, *input_shape))
    deterministic = apply_fn(params, x)
    np.testing.assert_array_equal(deterministic, apply_fn(params, x))
    with_key = apply_fn(params, x, jax.random.key(0))
    np.testing.assert_array_equal(with_key, apply_fn(params, x, jax.random.key(0)))
    assert not np.allclose(with_key, deterministic)
    assert not np.allclose(with_key, apply_fn(params, x, jax.random.key(1)))
    assert np.all(np.isfinite(with_key))


def test_build_uses_config_dropout_rate_and_slope():
    config = models.default_config()
    config.architecture = "mlp"
    config.dropout_rate = 0.5
    config.negative_slope = 0.2
    module = models.build(config, 3)
    assert isinstance(module, models.ToyMLP)
    assert (module.num_classes, module.dropout_rate, module.negative_slope) == (3, 0.5, 0.2)
    assert isinstance(models.build(models.default_config(), 10), models.PaperCNN)


def test_build_rejects_unknown_architecture():
    config = models.default_config()
    config.architecture = "resnet"
    with pytest.raises(ValueError, match="resnet"):
        models.build(config, 10)


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5])
def test_build_rejects_dropout_rate_outside_open_unit_interval(rate):
    config = models.default_config()
    config.dropout_rate = rate
    with pytest.raises(ValueError, match="dropout_rate"):
        models.build(config, 10)


# ----------------------------------------------------------------------------------------------------------
# HashDropout: the default mask generator


def _hash_dropout(rate, shape, seed):
    return models.HashDropout(rate).apply({}, jnp.ones(shape), False, rngs={"dropout": jax.random.key(seed)})


@pytest.mark.parametrize("rate", [0.1, 0.33, 0.5, 0.9])
def test_hash_dropout_drops_at_the_rate_and_rescales_the_rest(rate):
    out = np.asarray(_hash_dropout(rate, (400, 1001), seed=0))  # odd size
    kept = out != 0
    std = np.sqrt(rate * (1 - rate) / out.size)
    assert abs((1 - kept.mean()) - rate) < 5 * std
    np.testing.assert_allclose(out[kept], 1 / (1 - rate), rtol=1e-6)


def test_hash_dropout_masks_are_seeded_and_look_independent():
    a, b, c = (np.asarray(_hash_dropout(0.33, (500, 800), seed)) != 0 for seed in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert 0.5 < np.mean(a == c) < 0.6  # independent masks agree with probability 0.67^2 + 0.33^2 = 0.56
    # Neighbouring elements, rows and the two halves of each 32-bit word are uncorrelated.
    flat = a.ravel().astype(np.float64)
    half = flat.size // 2
    for x, y in [(flat[:-1], flat[1:]), (a[:-1].ravel(), a[1:].ravel()), (flat[:half], flat[half:])]:
        assert abs(np.corrcoef(x, y)[0, 1]) < 0.01


def test_hash_and_threefry_masks_give_networks_with_the_same_parameters():
    config = models.default_config()
    hashed = models.build(config, 10)
    config.dropout_masks = "threefry"
    threefry = models.build(config, 10)
    x = jnp.ones((2, 28, 28, 1))
    params = models.init_params(hashed, jax.random.key(0), (28, 28, 1))
    same = models.init_params(threefry, jax.random.key(0), (28, 28, 1))
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(same)
    np.testing.assert_array_equal(models.make_apply(hashed)(params, x), models.make_apply(threefry)(params, x))
    config.dropout_masks = "bitflip"
    with pytest.raises(ValueError, match="dropout_masks='bitflip' is unknown"):
        models.build(config, 10)


def test_init_params_first_called_under_a_trace_still_works_eagerly():
    # init_params caches one jitted init per (module, input shape); a first call under eval_shape must not
    # leave a tracer in that cache (it did once: UnexpectedTracerError on every later call).
    module = models.build(models.default_config(), 3)
    shapes = jax.eval_shape(lambda key: models.init_params(module, key, (12, 12, 2)), jax.random.key(0))
    params = models.init_params(module, jax.random.key(0), (12, 12, 2))
    assert jax.tree_util.tree_map(lambda p: p.shape, params) == jax.tree_util.tree_map(lambda s: s.shape, shapes)
