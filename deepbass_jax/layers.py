"""Fast building blocks of the paper CNN: hash dropout masks, a 3x3 convolution with a matmul kernel
gradient, a 2x2 max-pool with a strided-slice gradient, and a convolution for training several seeds at once.

Each replaces a flax/XLA default that measured slow (experiments/bench.py, the campaign's micro-benchmark) and
computes the same function: masks with the same drop probability, the same convolution and its exact gradient,
the same pooling. The two gradients are tuned for the CPU; on other backends XLA's own are used (`KERNELS`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import flax.linen as nn
from jax import lax
from jax.custom_batching import custom_vmap

_NHWC = ("NHWC", "HWIO", "NHWC")


def fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finalizer: a bijection on uint32 with full avalanche."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def hash_keep_mask(shape, seed: jax.Array, rate: float, row_offset: int = 0) -> jax.Array:
    """Bernoulli(1 - rate) keep mask of `shape` from a 64-bit seed [2] uint32.

    Element i is kept iff fmix32(fmix32(i ^ seed[0]) + seed[1]) >= round(rate * 2^32), so the drop
    probability is within 2^-33 of `rate`. The counter is built with iotas in `shape` so that XLA fuses the
    whole mask into the consumer (a flat iota followed by a reshape or concatenate does not fuse on CPU and
    cost 15x more). `row_offset` numbers the rows from there: the mask of rows [o, o + n) of a batch, as a
    data-parallel process computes its slice, equals those rows of the whole batch's mask.
    """
    counter = lax.broadcasted_iota(jnp.uint32, shape, 0) + jnp.uint32(row_offset)
    for dim in range(1, len(shape)):
        counter = counter * jnp.uint32(shape[dim]) + lax.broadcasted_iota(jnp.uint32, shape, dim)
    bits = fmix32(fmix32(counter ^ seed[0]) + seed[1])
    return bits >= jnp.uint32(min(round(rate * 2.0**32), 2**32 - 1))


class HashDropout(nn.Module):
    """Inverted dropout whose masks come from a counter-based hash rather than threefry.

    Why: threefry mask generation took about three quarters of MC-dropout inference time on a CPU.
    One threefry draw per call gives a 64-bit seed; `hash_keep_mask` turns it into the mask.
    """

    rate: float
    row_offset: int = 0  # the first row's number in the whole batch (data-parallel slices)

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic:
            return x
        seed = jax.random.bits(self.make_rng("dropout"), (2,), jnp.uint32)
        keep = hash_keep_mask(x.shape, seed, self.rate, self.row_offset)
        return jnp.where(keep, x / jnp.asarray(1.0 - self.rate, x.dtype), jnp.zeros((), x.dtype))


def conv3x3_kernel_grad(x: jax.Array, dy: jax.Array, rows_per_step: int = 7200) -> jax.Array:
    """Gradient of a 3x3 'SAME' convolution with respect to its kernel: x [N, H, W, I], dy [N, H, W, O]
    -> [3, 3, I, O], dW[i, j, c, o] = sum_{n, y, x} xpad[n, y + i, x + j, c] dy[n, y, x, o].

    Why not XLA's own: on CPU it lowers this to a convolution with an H x W window that took half of a training
    step. Here each image is zero-padded to (H+2) x (W+2) and flattened, so tap
    (i, j) is the contiguous slice starting at i * (W+2) + j; the nine slices side by side are an im2col
    matrix and the gradient is one matmul. A scan over groups of images (about `rows_per_step` padded
    pixels each, the fastest size measured) keeps that matrix in cache; built for a whole batch of 256 at
    once it was 5x slower.
    """
    num, height, width, channels_in = x.shape
    channels_out = dy.shape[-1]
    row = width + 2
    pixels = (height + 2) * row
    group = max(d for d in range(1, num + 1) if num % d == 0 and (d == 1 or d * pixels <= rows_per_step))
    length = group * pixels - (2 * row + 2)  # every row of the padded dy past this is padding

    def accumulate(total, group_arrays):
        xs, dys = group_arrays
        xs = jnp.pad(xs, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(-1, channels_in)
        dys = jnp.pad(dys, ((0, 0), (0, 2), (0, 2), (0, 0))).reshape(-1, channels_out)[:length]
        taps = [xs[i * row + j : i * row + j + length] for i in range(3) for j in range(3)]
        patches = jnp.concatenate(taps, axis=1)  # [length, 9 * I]
        return total + patches.T @ dys, None

    groups = (x.reshape(num // group, group, height, width, channels_in),
              dy.reshape(num // group, group, height, width, channels_out))
    total, _ = lax.scan(accumulate, jnp.zeros((9 * channels_in, channels_out), x.dtype), groups)
    return total.reshape(3, 3, channels_in, channels_out)


@jax.custom_vjp
def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """3x3 'SAME' convolution, stride 1: x [N, H, W, I], kernel [3, 3, I, O] -> [N, H, W, O]."""
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_NHWC)


def input_grad_kernel(kernel: jax.Array) -> jax.Array:
    """[3, 3, I, O] -> [3, 3, O, I]: the input gradient of a stride-1 'SAME' 3x3 convolution is the same
    convolution of dy with this kernel (flipped in space, its channel axes swapped)."""
    return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)


def _conv3x3_fwd(x, kernel):
    return conv3x3(x, kernel), (x, kernel)


def _conv3x3_bwd(residuals, dy):
    x, kernel = residuals
    dx = lax.conv_general_dilated(dy, input_grad_kernel(kernel), (1, 1), "SAME", dimension_numbers=_NHWC)
    return dx, conv3x3_kernel_grad(x, dy)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


# Which implementation of the convolution and pooling gradients a network uses: "cpu_tuned" (`conv3x3`,
# `max_pool_2x2`), "xla" (XLA's own gradients, which on GPU and TPU go to the vendor's convolution kernels) or
# "block_diagonal" (XLA's, with several seeds' training convolutions as one dense one: `conv3x3_seed_blocks`), or
# "block_diagonal_<g>" (the same in dense blocks of up to g seeds: `SEED_BLOCKS`); "auto" picks by backend
# (`resolve_kernels`). All compute the same function and gradients up to round-off.
SEED_BLOCKS = {"block_diagonal": 0, "block_diagonal_2": 2, "block_diagonal_5": 5}  # name -> most seeds per block
KERNELS = ("auto", "cpu_tuned", "xla") + tuple(SEED_BLOCKS)


def resolve_kernels(kernels: str, backend: str | None = None) -> str:
    """"auto" -> "cpu_tuned" on the CPU backend and "xla" on any other; other choices unchanged."""
    if kernels not in KERNELS:
        raise ValueError(f"model.kernels={kernels!r} is unknown; choose one of {KERNELS}.")
    if kernels != "auto":
        return kernels
    return "cpu_tuned" if (backend or jax.default_backend()) == "cpu" else "xla"


def conv3x3_xla(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`conv3x3` differentiated by XLA."""
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_NHWC)


def max_pool_2x2_xla(x: jax.Array) -> jax.Array:
    """`max_pool_2x2` differentiated by XLA (select-and-scatter: a tie gives the whole gradient to one element)."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _stack_seeds(a: jax.Array) -> jax.Array:
    """[R, N, H, W, C] -> [N, H, W, R * C]: the seeds side by side along the channels."""
    return jnp.moveaxis(a, 0, 3).reshape(*a.shape[1:4], -1)


def _unstack_seeds(a: jax.Array, num_seeds: int) -> jax.Array:
    """[N, H, W, R * C] -> [R, N, H, W, C]."""
    return jnp.moveaxis(a.reshape(*a.shape[:3], num_seeds, -1), 3, 0)


def _batched_in_axes(in_batched) -> tuple:
    return tuple(0 if batched else None for batched in in_batched)


def _grouped_conv3x3(x: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
    """x [N, H, W, G I'], kernel [3, 3, I', G O'] -> [N, H, W, G O']: `groups` independent convolutions."""
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_NHWC, feature_group_count=groups)


def _grouped_conv3x3_kernel_grad(x: jax.Array, dy: jax.Array, groups: int) -> jax.Array:
    """Gradient of `_grouped_conv3x3` with respect to its kernel, by XLA: x [N, H, W, G I'], dy [N, H, W, G O'] ->
    [3, 3, I', G O']."""
    kernel = jnp.zeros((3, 3, x.shape[-1] // groups, dy.shape[-1]), x.dtype)
    return jax.vjp(lambda k: _grouped_conv3x3(x, k, groups), kernel)[1](dy)[0]


def _conv3x3_kernel_grad_xla(x: jax.Array, dy: jax.Array) -> jax.Array:
    """Gradient of `conv3x3_xla` with respect to its kernel: x [N, H, W, I], dy [N, H, W, O] -> [3, 3, I, O]."""
    return _grouped_conv3x3_kernel_grad(x, dy, 1)


def seeds_per_block(num_seeds: int, most: int) -> int:
    """How many of `num_seeds` seeds one dense block holds: the largest divisor of num_seeds not above `most`
    (0: all of them), so that the blocks are equal."""
    most = num_seeds if most <= 0 else min(most, num_seeds)
    return max(d for d in range(1, most + 1) if num_seeds % d == 0)


def _block_diagonal_kernel(kernel: jax.Array, per_block: int) -> jax.Array:
    """[R, 3, 3, I, O] -> [3, 3, g I, R O] for a convolution of R / g groups (feature_group_count): group b holds
    seeds b g ... b g + g - 1 as one dense g I -> g O kernel, zero between seeds (g = per_block)."""
    num_seeds, _, _, channels_in, channels_out = kernel.shape
    blocks = kernel.reshape(num_seeds // per_block, per_block, 3, 3, channels_in, channels_out)
    block = jnp.einsum("bshwio,st->hwsibto", blocks, jnp.eye(per_block, dtype=kernel.dtype))
    return block.reshape(3, 3, per_block * channels_in, num_seeds * channels_out)


def _seeds_rule(plain, blocked):
    """plain(a, b), which under vmap over both arguments (R seeds) computes blocked(R, a, b) -> [R, ...]; with one
    argument batched, XLA's own batching of plain (dense already)."""
    function = custom_vmap(plain)

    @function.def_vmap
    def _rule(num_seeds, in_batched, a, b):
        if not all(in_batched):
            return jax.vmap(plain, in_axes=_batched_in_axes(in_batched))(a, b), True
        return blocked(num_seeds, a, b), True

    return function


@functools.cache
def _seed_block_ops(most_per_block: int):
    """`conv3x3_xla` and its kernel gradient, each of which, under vmap over both arguments (R seeds), runs as one
    convolution of R / g groups, a group being g seeds' dense block-diagonal convolution
    (g = seeds_per_block(R, most_per_block)); with one argument batched, XLA's own batching (dense already)."""

    def blocked_conv(num_seeds, x, kernel):
        per_block = seeds_per_block(num_seeds, most_per_block)
        out = _grouped_conv3x3(_stack_seeds(x), _block_diagonal_kernel(kernel, per_block), num_seeds // per_block)
        return _unstack_seeds(out, num_seeds)

    def blocked_kernel_grad(num_seeds, x, dy):
        per_block = seeds_per_block(num_seeds, most_per_block)
        groups, channels_in, channels_out = num_seeds // per_block, x.shape[-1], dy.shape[-1]
        full = _grouped_conv3x3_kernel_grad(_stack_seeds(x), _stack_seeds(dy), groups)  # [3, 3, g I, R O]
        full = full.reshape(3, 3, per_block, channels_in, groups, per_block, channels_out)
        seeds = jnp.arange(per_block)
        diagonal = full[:, :, seeds, :, :, seeds, :]  # [g, 3, 3, I, R / g, O]: seed b g + s at [s, ..., b, :]
        return jnp.moveaxis(diagonal, 4, 0).reshape(num_seeds, 3, 3, channels_in, channels_out)

    conv = _seeds_rule(conv3x3_xla, blocked_conv)
    kernel_grad = _seeds_rule(_conv3x3_kernel_grad_xla, blocked_kernel_grad)

    @jax.custom_vjp
    def conv_with_blocks(x, kernel):
        return conv3x3_xla(x, kernel)

    def forward(x, kernel):
        return conv(x, kernel), (x, kernel)

    def backward(residuals, dy):
        x, kernel = residuals
        return conv(dy, input_grad_kernel(kernel)), kernel_grad(x, dy)

    conv_with_blocks.defvjp(forward, backward)
    return conv_with_blocks


def conv3x3_seed_blocks(most_per_block: int):
    """`conv3x3_xla`, differentiated so that R seeds trained at once under vmap (seed_axis "vmap") run each of the
    training convolutions (forward, input and kernel gradients) in dense blocks of g = seeds_per_block(R,
    most_per_block) seeds (0: all R in one block): one convolution of R / g groups of g I channels, each with a
    block-diagonal kernel, rather than the R groups of I channels XLA's batching makes.

    Why: grouped convolutions of few channels per group are known to be slow on GPUs (10 seeds of the paper CNN
    took 5x one seed's step time on an H100). A block does g times the arithmetic of its seeds, in the dense
    form tensor cores take; fewer, wider groups sit between the two. Which g wins depends on the device: the
    campaign's micro-benchmark times the choices (`experiments.campaign --kernels=fastest`). On the CPU one block
    of every seed is 16x slower. Without a gradient (pool inference, evaluation) it is `conv3x3_xla` exactly,
    grouped under vmap. Any vmapped axis counts as seeds: per-example gradients under vmap over N examples would
    make the kernel gradient N times the work, so use it for seeds alone.
    """
    return _seed_block_ops(max(most_per_block, 0))


class Conv3x3(nn.Module):
    """nn.Conv(features, (3, 3), padding='SAME') with the same parameters ('kernel' [3, 3, I, O], 'bias'
    [O]), computed by `CONV3X3[kernels]`."""

    features: int
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    kernels: str = "cpu_tuned"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (3, 3, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        return CONV3X3[self.kernels](x, kernel.astype(x.dtype)) + bias.astype(x.dtype)


def _max_pool_2x2_strided(x: jax.Array) -> jax.Array:
    height, width = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    corners = [x[:, i:height:2, j:width:2] for i in range(2) for j in range(2)]
    return jnp.maximum(jnp.maximum(corners[0], corners[1]), jnp.maximum(corners[2], corners[3]))


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2, 'VALID' (an odd last row/column is dropped): [N, H, W, C] -> [N, H//2, W//2, C].

    The forward pass is XLA's reduce-window (fastest for inference); the gradient is that of the same pool
    written as three elementwise maxima of strided slices, 8x faster on CPU than XLA's select-and-scatter.
    Ties split the gradient evenly (a valid subgradient; select-and-scatter gives it all to one element).
    """
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _max_pool_2x2_fwd(x):
    return max_pool_2x2(x), x


def _max_pool_2x2_bwd(x, dy):
    return jax.vjp(_max_pool_2x2_strided, x)[1](dy)


max_pool_2x2.defvjp(_max_pool_2x2_fwd, _max_pool_2x2_bwd)


# The implementations by `KERNELS` choice (after `max_pool_2x2`, which the table names).
CONV3X3 = {"cpu_tuned": conv3x3, "xla": conv3x3_xla,
           **{name: conv3x3_seed_blocks(most) for name, most in SEED_BLOCKS.items()}}
MAX_POOL_2X2 = {"cpu_tuned": max_pool_2x2, "xla": max_pool_2x2_xla, **{name: max_pool_2x2_xla for name in SEED_BLOCKS}}
