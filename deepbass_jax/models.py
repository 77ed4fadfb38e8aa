"""The paper's networks as flax modules, used through a pure `apply(params, x, key)`.

Dropout is on exactly when a PRNG key is given: `apply(params, x)` is the deterministic network,
`apply(params, x, key)` one stochastic MC-dropout pass f^(t) of eq. 7.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from deepbass_jax import user_code
from deepbass_jax.layers import MAX_POOL_2X2, Conv3x3, HashDropout, resolve_kernels

# Keras defaults of the original implementation: glorot-uniform kernels, zero biases.
_KERNEL_INIT = nn.initializers.glorot_uniform()

ApplyFn = Callable[..., jax.Array]


DROPOUT_MASKS = {"hash": HashDropout, "threefry": lambda rate, row_offset=0: nn.Dropout(rate)}


class PaperCNN(nn.Module):
    """MNIST CNN of section 5: 4 x [conv 3x3 'same', LeakyReLU, dropout], 2x2 max-pool after blocks 2 and 4.

    Input [N, H, W, C] -> logits [N, num_classes]. 14,970 parameters for 28x28x1 input and 10 classes.
    """

    num_classes: int
    features: int = 16
    dropout_rate: float = 0.33
    negative_slope: float = 0.1  # eq. 13
    dropout_masks: str = "hash"  # a key of DROPOUT_MASKS
    kernels: str = "cpu_tuned"  # "cpu_tuned", "xla" or "block_diagonal*" (layers.KERNELS; build resolves "auto")
    row_offset: int = 0  # hash dropout: this batch's first row in the whole batch (a data-parallel slice)

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        for block in range(4):
            x = Conv3x3(self.features, kernel_init=_KERNEL_INIT, kernels=self.kernels, name=f"Conv_{block}")(x)
            x = nn.leaky_relu(x, self.negative_slope)
            x = DROPOUT_MASKS[self.dropout_masks](self.dropout_rate, self.row_offset)(x, deterministic=deterministic)
            if block in (1, 3):
                x = MAX_POOL_2X2[self.kernels](x)
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes, kernel_init=_KERNEL_INIT)(x)


class ToyMLP(nn.Module):
    """Toy network of section 4: 2 -> 50 -> 50 -> 50 -> C, LeakyReLU and dropout after each hidden layer.

    Input [N, D] -> logits [N, num_classes].
    """

    num_classes: int
    hidden: Sequence[int] = (50, 50, 50)
    dropout_rate: float = 0.33
    negative_slope: float = 0.1  # eq. 13
    dropout_masks: str = "hash"  # a key of DROPOUT_MASKS
    row_offset: int = 0  # hash dropout: this batch's first row in the whole batch (a data-parallel slice)

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            x = nn.Dense(width, kernel_init=_KERNEL_INIT)(x)
            x = nn.leaky_relu(x, self.negative_slope)
            x = DROPOUT_MASKS[self.dropout_masks](self.dropout_rate, self.row_offset)(x, deterministic=deterministic)
        return nn.Dense(self.num_classes, kernel_init=_KERNEL_INIT)(x)


ARCHITECTURES = {"cnn": PaperCNN, "mlp": ToyMLP}


def default_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # "cnn" (paper MNIST network), "mlp" (paper toy network), or your flax module as "package.module:Class"
    # (`__call__(x, deterministic)`, dropout through layers.HashDropout or nn.Dropout; built with num_classes
    # and model.kwargs only)
    config.architecture = "cnn"
    config.kwargs = "{}"  # JSON object of the module's own fields, e.g. '{"features": 32}' (any architecture)
    config.dropout_rate = 0.33  # dropout after every hidden layer; MC dropout uses the same rate
    config.negative_slope = 0.1  # LeakyReLU slope, eq. 13
    config.dropout_masks = "hash"  # "hash" (fast counter-based masks) or "threefry" (flax's nn.Dropout)
    # CNN gradients: "cpu_tuned" (layers.conv3x3 / max_pool_2x2), "xla" (XLA's own), "auto" (by backend), or
    # "block_diagonal" (XLA's, with the training convolutions of seeds under vmap as one dense convolution each),
    # "block_diagonal_2" / "block_diagonal_5" (the same in dense blocks of up to 2 / 5 seeds: layers.SEED_BLOCKS)
    config.kernels = "auto"
    return config


def import_module_class(path: str) -> type:
    """The flax module class at "package.module:Class"; ValueError in one line when it cannot be had."""
    found = user_code.resolve(path, "model.architecture")
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise ValueError(f"model.architecture={path!r} is {found!r}, not a flax linen Module class.")
    return found


def module_kwargs(config: ml_collections.ConfigDict) -> dict:
    """model.kwargs parsed: a JSON object of the module's own fields; ValueError in one line otherwise."""
    try:
        kwargs = json.loads(config.kwargs)
    except json.JSONDecodeError as error:
        raise ValueError(f"model.kwargs={config.kwargs!r} is not JSON ({error}); give an object such as "
                         "'{\"features\": 32}'.") from error
    if not isinstance(kwargs, dict):
        raise ValueError(f"model.kwargs={config.kwargs!r} must be a JSON object such as '{{\"features\": 32}}'.")
    return kwargs


def build(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    """Returns the flax module named by `config.architecture` with `num_classes` outputs: a registry entry with the
    model config's fields, or the user's module class with num_classes and model.kwargs alone."""
    kwargs = module_kwargs(config)
    if user_code.is_import_path(config.architecture):
        return import_module_class(config.architecture)(num_classes=num_classes, **kwargs)
    if config.architecture not in ARCHITECTURES:
        raise ValueError(
            f"model.architecture={config.architecture!r} is unknown; choose one of {sorted(ARCHITECTURES)}."
        )
    if not 0.0 < config.dropout_rate < 1.0:
        raise ValueError(
            f"model.dropout_rate={config.dropout_rate} must lie in (0, 1): MC dropout needs stochastic passes."
        )
    if config.dropout_masks not in DROPOUT_MASKS:
        raise ValueError(
            f"model.dropout_masks={config.dropout_masks!r} is unknown; choose one of {sorted(DROPOUT_MASKS)}."
        )
    options = {"kernels": resolve_kernels(config.kernels)} if config.architecture == "cnn" else {}
    return ARCHITECTURES[config.architecture](
        num_classes=num_classes,
        dropout_rate=config.dropout_rate,
        negative_slope=config.negative_slope,
        dropout_masks=config.dropout_masks,
        **{**options, **kwargs},
    )


def check_network(config: ml_collections.ConfigDict, input_shape: Sequence[int], num_classes: int,
                  process_count: int = 1) -> None:
    """Refuses, before any work, a network of the user's (model.architecture an import path) that breaks the
    contract: logits not [N, num_classes], no dropout (its MC-dropout passes would all agree), or flax's
    nn.Dropout over several processes (its masks do not follow a row's place in the global batch). Runs the
    network once deterministically and twice with dropout on two samples."""
    if not user_code.is_import_path(config.architecture):
        return
    try:
        module = build(config, num_classes)
    except TypeError as error:
        raise ValueError(f"model.architecture={config.architecture!r} with model.kwargs={config.kwargs!r}: "
                         f"{error}.") from error
    x = np.random.default_rng(0).normal(size=(2, *input_shape)).astype(np.float32)
    try:
        params = init_params(module, jax.random.key(0), input_shape)
        called = set()

        def record(next_fun, args, kwargs, context):
            called.add(type(context.module))
            return next_fun(*args, **kwargs)

        apply = make_apply(module)
        with nn.intercept_methods(record):
            passes = [np.asarray(apply(params, x, jax.random.key(k))) for k in (1, 2)]
        logits = np.asarray(apply(params, x))
    except Exception as error:  # the user's code: any failure is theirs to see in one line
        raise ValueError(f"model.architecture={config.architecture!r} fails on samples of shape "
                         f"{tuple(input_shape)}: {type(error).__name__}: {str(error).splitlines()[0]}") from error
    name = config.architecture
    if logits.shape != (2, num_classes):
        raise ValueError(f"model.architecture={name!r} gives outputs of shape {logits.shape[1:]} per batch of 2, "
                         f"but the data have {num_classes} classes: it must return logits [N, num_classes] (the "
                         "runner passes num_classes).")
    if np.array_equal(passes[0], passes[1]):
        raise ValueError(f"model.architecture={name!r} has no dropout: two MC-dropout passes gave the same "
                         "outputs; add layers.HashDropout (or nn.Dropout) layers that are on when "
                         "deterministic=False.")
    if process_count > 1 and any(issubclass(c, nn.Dropout) for c in called):
        raise ValueError(f"model.architecture={name!r} uses flax's nn.Dropout, whose masks do not follow a row's "
                         f"place in the global batch over {process_count} processes; use layers.HashDropout with "
                         "a row_offset field, or run one process.")
    if process_count > 1 and "row_offset" not in {f.name for f in dataclasses.fields(module)}:
        raise ValueError(f"model.architecture={name!r} has no row_offset field for its layers.HashDropout layers, "
                         f"which {process_count} processes set to place each slice of a batch; add "
                         "`row_offset: int = 0` and pass it to HashDropout, or run one process.")


CNN_MIN_SIDE = 4  # two 2x2 max-pools: a 4x4 image ends as 1x1; smaller ones end as nothing


def check_input_shape(config: ml_collections.ConfigDict, input_shape: Sequence[int]) -> None:
    """Refuses, before any work, samples of shape `input_shape` (one sample's) that `config.architecture` cannot
    take; ValueError names the shape and the remedy."""
    if config.architecture != "cnn":
        return
    if len(input_shape) != 3:
        raise ValueError(
            f"model.architecture='cnn' needs images [H, W, C], but the samples have shape {tuple(input_shape)}; "
            "use --config.model.architecture=mlp for vector data."
        )
    if min(input_shape[:2]) < CNN_MIN_SIDE:
        raise ValueError(
            f"the CNN of section 5 pools twice by 2x2 and needs images of at least {CNN_MIN_SIDE}x{CNN_MIN_SIDE} "
            f"pixels, but the samples are {input_shape[0]}x{input_shape[1]}; upscale them, or use "
            "--config.model.architecture=mlp."
        )


def init_params(module: nn.Module, key: jax.Array, input_shape: Sequence[int]):
    """Initial parameters for inputs of shape [N, *input_shape]."""
    return _jitted_init(module, tuple(input_shape))(key)


@functools.lru_cache(maxsize=None)
def _jitted_init(module: nn.Module, input_shape: tuple):
    # One compiled program instead of flax's eager init, which compiles every op on its own (8 s for the CNN).
    # The dummy input is a numpy constant: a jnp array made on a first call under a trace (eval_shape, vmap)
    # would be a tracer, and caching it here would leak it into every later call.
    dummy = np.zeros((1, *input_shape), np.float32)
    return jax.jit(lambda key: module.init(key, dummy, deterministic=True)["params"])


@dataclasses.dataclass(frozen=True)
class Apply:
    """Pure `apply(params, x, key=None) -> logits [N, C]`; dropout is active exactly when `key` is given.

    Equal (and hashing equal) for equal modules, so jitted functions that take it as a static argument
    compile once per architecture, not once per run or per closure.
    """

    module: nn.Module

    def __call__(self, params, x: jax.Array, key: Optional[jax.Array] = None) -> jax.Array:
        if key is None:
            return self.module.apply({"params": params}, x, deterministic=True)
        return self.module.apply({"params": params}, x, deterministic=False, rngs={"dropout": key})


def make_apply(module: nn.Module) -> ApplyFn:
    """The pure apply function of `module` (see `Apply`)."""
    return Apply(module)


def count_params(params) -> int:
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
