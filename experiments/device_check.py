"""What a campaign job measures before it trains, on whatever device it lands on: the paper CNN against numbers
computed on the CPU (is this device right?), and the micro-benchmark of one pool chunk and one training step
(how fast, which seed axis and model.kernels, and how long a row will take).

    check_reference("xla")                  # logits and gradient against experiments/reference_cnn.json
    time_device_functions(config, dataset, num_seeds=10, seed_axis="vmap")
    projection_from(timings, "vmap", pool_of)(config, 10)["row"]   # projected seconds of a 10-seed row

No flags: experiments/campaign.py runs these and decides with them.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from deepbass_jax import algorithm, config as config_lib, data, layers, losses, models, train
from deepbass_jax import augment as augment_lib
from experiments import provenance

REFERENCE = pathlib.Path(__file__).with_name("reference_cnn.json")
# TF32 convolutions (XLA's default for float32 on recent GPUs) carry about 3 decimal digits.
REFERENCE_RTOL = 2e-2
# In float32 throughout only the order of the sums differs from the CPU's (a choice that mixed seeds was off by 0.15).
EXACT_RTOL = 1e-3


def device_facts() -> dict:
    device = jax.devices()[0]
    return {"backend": jax.default_backend(), "device_kind": device.device_kind, "devices": jax.device_count(),
            "jax": jax.__version__, "python": platform.python_version(), "host_cores": os.cpu_count(),
            "description": provenance.device()}



# ------------------------------------------------------------------------------ reference numbers
def _reference_inputs():
    x = ((np.arange(8 * 28 * 28) * 37) % 256).reshape(8, 28, 28, 1).astype(np.float32) / 255.0
    labels = np.arange(8, dtype=np.int32) % 10
    return jnp.asarray(x), jnp.asarray(labels)


def reference_outputs(kernels: str) -> dict:
    """The paper CNN (parameters from key 0) on fixed inputs [8, 28, 28, 1]: deterministic logits, logits with
    the dropout masks of key 1, and per-leaf norms and first values of the gradient of the mean cross-entropy.
    The gradient is taken as the campaign trains, under vmap over seeds: beside three more seeds that see the
    images flipped (a kernel choice that mixed seeds would change it; four, so that blocks of two seeds are
    two groups)."""
    module = models.PaperCNN(num_classes=10, kernels=kernels)
    apply_fn = models.make_apply(module)
    params = models.init_params(module, jax.random.key(0), (28, 28, 1))
    x, labels = _reference_inputs()
    dropout_key = jax.random.key(1)

    def loss(params, x):
        logits = apply_fn(params, x, dropout_key)
        return losses.cross_entropy(logits, labels, jnp.ones(labels.shape, jnp.float32))  # the batch mean

    seeds_params = jax.tree_util.tree_map(lambda leaf: jnp.stack([leaf] * 4), params)
    seeds_images = jnp.stack([x, jnp.flip(x, 1), jnp.flip(x, 2), jnp.flip(x, (1, 2))])
    seeds_grads = jax.jit(jax.vmap(jax.grad(loss)))(seeds_params, seeds_images)
    grads = jax.tree_util.tree_map(lambda leaf: leaf[0], seeds_grads)
    flat = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in
            jax.tree_util.tree_flatten_with_path(grads)[0]}
    return {
        "logits": np.asarray(jax.jit(apply_fn)(params, x)).round(6).tolist(),
        "dropout_logits": np.asarray(jax.jit(apply_fn)(params, x, dropout_key)).round(6).tolist(),
        "grad_norms": {name: float(np.linalg.norm(g)) for name, g in flat.items()},
        "grad_first": {name: g.ravel()[:8].round(8).tolist() for name, g in flat.items()},
    }


def _relative_error(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(ours - reference)) / max(np.max(np.abs(reference)), 1e-12))


def check_reference(kernels: str, exact: bool = False) -> dict:
    """This backend's `reference_outputs` against REFERENCE (computed on the CPU): the largest relative error of
    each quantity, and whether all lie within REFERENCE_RTOL; with `exact`, in float32 throughout (no TF32) and
    within EXACT_RTOL, which tells a kernel choice that computes something else from TF32's round-off."""
    expected = json.loads(REFERENCE.read_text())
    with jax.default_matmul_precision("float32") if exact else contextlib.nullcontext():
        ours = reference_outputs(kernels)
    errors = {key: _relative_error(ours[key], expected[key]) for key in ("logits", "dropout_logits")}
    errors["grad_norms"] = max(_relative_error(ours["grad_norms"][name], expected["grad_norms"][name])
                               for name in expected["grad_norms"])
    # First gradient entries relative to their leaf's norm: a small entry carries TF32's error of large ones.
    errors["grad_first"] = max(
        float(np.max(np.abs(np.subtract(ours["grad_first"][name], expected["grad_first"][name]))))
        / expected["grad_norms"][name] for name in expected["grad_first"])
    rtol = EXACT_RTOL if exact else REFERENCE_RTOL
    return {"kernels": kernels, "precision": "float32" if exact else "default", "relative_errors": errors,
            "rtol": rtol, "passed": all(e <= rtol for e in errors.values())}


# ---------------------------------------------------------------------------------- micro-benchmark
def _timed(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    started = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - started) / repeats


def _initial_states(config, dataset: data.Dataset, num_seeds: int):
    apply_fn = models.make_apply(models.build(config.model, dataset.num_classes))
    return apply_fn, algorithm.initial_train_states(apply_fn, [jax.random.key(r) for r in range(num_seeds)],
                                                    dataset.input_shape, config.train)


def time_device_functions(config, dataset: data.Dataset, num_seeds: int, seed_axis: str,
                          single_step: bool = True) -> dict:
    """Seconds of one pool chunk of MC inference and of one training step (of train.steps_per_call in one call) for
    `num_seeds` seeds at once, with config.model.kernels; `single_step` as in `time_training_step`."""
    apply_fn, states = _initial_states(config, dataset, num_seeds)
    chunk = config.chunk_size
    images = jnp.asarray(dataset.train_images[:chunk])
    keys = jax.random.split(jax.random.key(0), num_seeds)
    ids = np.arange(chunk, dtype=np.uint32)
    chunk_seconds = _timed(lambda: algorithm.seeds_chunk_stats(
        apply_fn, states.params, images, ids, keys, num_passes=config.mc_passes_pool, shared_images=True,
        seed_axis=seed_axis), repeats=3)
    return {"seeds": num_seeds, "seed_axis": seed_axis, "kernels": layers.resolve_kernels(config.model.kernels),
            "chunk_size": chunk, "chunk_seconds": chunk_seconds,
            **time_training_step(config, dataset, num_seeds, seed_axis, single_step, states)}


def time_training_step(config, dataset: data.Dataset, num_seeds: int, seed_axis: str, single_step: bool = True,
                       states=None) -> dict:
    """Seconds of one training step of `num_seeds` seeds at once (step_seconds: train.steps_per_call steps in one
    call, as the epochs take them; single_step_seconds: one step a call, if `single_step`, else None), with
    config.model.kernels, from `states` (fresh ones if None).

    The steps take the arguments the run's epochs give them (its pool on the device, targets [R, N] of int32,
    config.train's augmentation), so the run that follows reuses these programs instead of compiling its own."""
    states = _initial_states(config, dataset, num_seeds)[1] if states is None else states
    pools = [algorithm.split_pool(seed_config, dataset)[2]
             for seed_config in config_lib.seed_configs(config, num_seeds)]
    shared = all(np.array_equal(pool, pools[0]) for pool in pools)  # all of the training set, unless pool_size
    images = jnp.asarray(dataset.train_images[pools[0]] if shared else
                         np.stack([dataset.train_images[pool] for pool in pools]))
    targets = jnp.asarray(np.stack([dataset.train_labels[pool] for pool in pools]).astype(np.int32))
    batch, per_call = config.train.batch_size, config.train.steps_per_call
    indices = np.random.default_rng(0).integers(0, len(pools[0]), (per_call, num_seeds, batch)).astype(np.int32)
    weights = np.ones((per_call, num_seeds, batch), np.float32)
    strong_view = augment_lib.strong_view(config.train)  # DeepBASS+'s consistency: each row's view, int32
    no_augment = np.zeros((per_call, num_seeds, batch), bool if strong_view is None else np.int32)
    take = np.ones((per_call, num_seeds), bool)
    holder = {"states": states, "totals": train.StepMetrics.zeros(num_seeds)}
    augment = {f"augment_{name}": config.train[f"augment_{name}"] for name in ("degrees", "scale", "shift", "warp")}

    def steps(count: int):  # `count` steps in one program, as the epochs take them
        holder["states"], holder["totals"] = algorithm.seeds_train_steps(
            holder["states"], holder["totals"], images, targets, indices[:count], weights[:count],
            no_augment[:count], take[:count], shared_images=shared, seed_axis=seed_axis, strong_view=strong_view,
            **augment)
        return holder["totals"].loss

    step_seconds = _timed(lambda: steps(per_call), repeats=max(1, 16 // per_call)) / per_call
    single_step_seconds = None if not single_step else (_timed(lambda: steps(1), repeats=10) if per_call > 1
                                                         else step_seconds)
    return {"step_seconds": step_seconds, "steps_per_call": per_call, "single_step_seconds": single_step_seconds}


def kernel_candidates(choice: str, seed_axis: str, max_seeds: int, backend: str | None = None) -> tuple[str, ...]:
    """The model.kernels choices the micro-benchmark times against each other, the default first: given
    --kernels=fastest, the seed blocks (layers.SEED_BLOCKS) beside it where they can differ (seeds trained at once
    under vmap) and may win (an accelerator: on the CPU dense convolutions of all seeds measured 16x slower), one
    choice per size of block above one seed for --max_seeds seeds, the largest first; else the one asked for."""
    backend = backend or jax.default_backend()
    if choice != "fastest":
        return (layers.resolve_kernels(choice, backend),)
    default = layers.resolve_kernels("auto", backend)
    if seed_axis != "vmap" or max_seeds < 2 or backend == "cpu":
        return (default,)
    by_size = {}  # seeds per block -> the first choice that makes it
    for name, most in layers.SEED_BLOCKS.items():
        by_size.setdefault(layers.seeds_per_block(max_seeds, most), name)
    return (default,) + tuple(by_size[size] for size in sorted(by_size, reverse=True) if size > 1)


# ---------------------------------------------------------------------------------------- projection
def _steps_per_epoch(config, num_pool: int, num_classes: int = 10) -> tuple[int, int]:
    """Training steps of one iteration at the most labels (an upper bound) and of one initial-fit epoch."""
    initial = num_pool if config.initial_all else config.initial_per_class * num_classes
    labels = config.budget if config.active else initial
    unlabeled = num_pool - labels if config.semi_supervised else 0
    batch, upsample = config.train.batch_size, config.train.upsample
    return -(-(labels * upsample + unlabeled) // batch), -(-(initial * upsample) // batch)


def projected_seconds(config, num_pool: int, chunk_seconds: float, step_seconds: float) -> dict:
    """A row's wall time from per-chunk and per-step times (pool inference and training; host work aside)."""
    iteration_steps, fit_steps = _steps_per_epoch(config, num_pool)
    iteration = math.ceil(num_pool / config.chunk_size) * chunk_seconds + iteration_steps * step_seconds
    initial_fit = config.initial_epochs * fit_steps * step_seconds
    return {"iteration": iteration, "initial_fit": initial_fit, "row": initial_fit + config.iterations * iteration}


def _linear(at_one: float, at_many: float, many: int):
    """t(R) = a + b R through t(1) and t(many)."""
    slope = (at_many - at_one) / (many - 1) if many > 1 else at_one
    slope = max(slope, 0.0)
    return lambda seeds: max(at_one + slope * (seeds - 1), 0.0)


def projection_from(timings: list[dict], axis: str, pool_of):
    """projection(config, seeds) -> projected_seconds of `config`'s row for that many seeds at once, from the
    micro-benchmark's `timings` of seed axis `axis` (at 1 and at most seeds, linear between); pool_of(config) ->
    its pool size."""
    by_seeds = {t["seeds"]: t for t in timings if t["seed_axis"] == axis}
    most = max(by_seeds)
    chunk = _linear(by_seeds[min(by_seeds)]["chunk_seconds"], by_seeds[most]["chunk_seconds"], most)
    step = _linear(by_seeds[min(by_seeds)]["step_seconds"], by_seeds[most]["step_seconds"], most)
    return lambda config, seeds: projected_seconds(config, pool_of(config), chunk(seeds), step(seeds))
