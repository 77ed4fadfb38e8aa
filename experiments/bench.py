"""Throughput of the paper CNN: MC-dropout pool inference and training, JAX against PyTorch in one process.

  python -m experiments.bench --quick            # under a minute
  python -m experiments.bench --json=bench.json  # the full measurement
  python -m experiments.bench --memory --noiteration --pool_size=0   # peak memory, 60,000 vs 1,000,000 pool

Prints ratios against the PyTorch references measured in the same run (a sequential loop of T stochastic
passes, as BaaL does by default, and the batch replicated T times, as BaaL's `replicate_in_memory`), so
numbers from noisy machines stay comparable. PyTorch is optional (`pip install -e ".[bench]"`); without it
only the JAX figures are reported.
"""

import json
import platform
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from deepbass_jax import algorithm, augment, config as config_lib, driver as driver_lib, models, train
from experiments import provenance

_QUICK = flags.DEFINE_bool("quick", False, "Small sizes and one repetition: finishes in under a minute.")
_JSON = flags.DEFINE_string("json", None, "Write the results as one JSON object to this file.")
_ITERATION = flags.DEFINE_bool("iteration", True, "Also time one full Algorithm 3.1 iteration on a 60,000 pool.")
_POOL = flags.DEFINE_integer("pool_size", 10240, "Images in the MC-inference pool (without --quick).")
_TRAIN = flags.DEFINE_integer("train_samples", 10240, "Samples per timed training epoch (without --quick).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions after a warm-up; the fastest counts.")
_MEMORY = flags.DEFINE_bool("memory", False, "Also measure the peak memory of pool inference per pool size.")
_MEMORY_POOLS = flags.DEFINE_list("memory_pools", ["60000", "1000000"], "Pool sizes for --memory.")
_MEMORY_CHILD = flags.DEFINE_integer("memory_child", 0, "Internal: measure one pool size in this process.")

PASSES = 10  # T'
CHUNK_SIZE = config_lib.default_config().chunk_size  # the driver's pool inference chunk
SEED_AXIS = "map"  # one seed: "map" and "vmap" run the same program


def _best_seconds(fn, repeats: int) -> float:
    """Fastest of `repeats` timed calls after one warm-up call (compilation excluded)."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def _jax_figures(pool_size: int, train_samples: int, repeats: int) -> dict:
    module = models.build(models.default_config(), 10)
    apply_fn = models.make_apply(module)
    params = models.init_params(module, jax.random.key(0), (28, 28, 1))
    seed_params = algorithm.stack([params])  # one seed
    pool = jax.random.uniform(jax.random.key(1), (pool_size, 28, 28, 1))
    keys = iter(jax.random.split(jax.random.key(2), 1000))

    def mc():  # one run's pool inference; the scores arrive on the host
        algorithm.pool_stats(apply_fn, seed_params, pool, next(keys)[None], PASSES, CHUNK_SIZE, shared=True,
                             seed_axis=SEED_AXIS)

    mc_seconds = _best_seconds(mc, repeats)
    targets = jnp.zeros((1, pool_size), jnp.int32)
    states = algorithm.stack([train.create_train_state(apply_fn, params, jax.random.key(3), train.default_config())])
    indices = np.random.default_rng(0).integers(0, pool_size, train_samples).astype(np.int32)
    plan = (indices, np.ones(train_samples, np.float32))

    def epoch():  # one run's epoch; returns once the loss is on the host
        nonlocal states
        states, _ = algorithm.train_epoch(states, pool, targets, [plan], 256, shared=True, seed_axis=SEED_AXIS,
                                          steps_per_call=train.default_config().steps_per_call)

    train_seconds = _best_seconds(epoch, repeats)
    # DeepBASS+'s epoch (plus_300): half of the entries pseudo-labeled on the strong view, the ground truth warped.
    labeled = (np.random.default_rng(1).random((1, pool_size)) < 0.5)
    strong_config = train.default_config()
    strong_config.strong_augment = True
    strong_view = augment.strong_view(strong_config)  # the default strong view

    def strong_epoch():
        nonlocal states
        states, _ = algorithm.train_epoch(states, pool, targets, [plan], 256, shared=True, seed_axis=SEED_AXIS,
                                          labeled=labeled, augment_degrees=10.0, augment_scale=0.05,
                                          steps_per_call=train.default_config().steps_per_call,
                                          strong_view=strong_view)

    strong_seconds = _best_seconds(strong_epoch, repeats)
    return {
        "jax_mc_passes_per_s": pool_size * PASSES / mc_seconds,
        "jax_train_samples_per_s": train_samples / train_seconds,
        "jax_strong_train_samples_per_s": train_samples / strong_seconds,
        "strong_step_over_plain_step": strong_seconds / train_seconds,  # issue 29's bound: at most 1.15
    }


class SyntheticPool:
    """A pool of `size` random 28x28x1 images made on demand, slice by slice: it never exists in memory whole,
    so the peak memory of pool inference over it is the inference's own."""

    def __init__(self, size: int):
        self.shape = (size, 28, 28, 1)

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        return np.random.default_rng(start).random((stop - start, *self.shape[1:]), np.float32)


def _memory_child(pool_size: int) -> None:
    """Pool inference (T' passes, default chunk) over a synthetic pool; prints peak RSS and time as JSON."""
    module = models.build(models.default_config(), 10)
    apply_fn = models.make_apply(module)
    params = models.init_params(module, jax.random.key(0), (28, 28, 1))
    started = time.perf_counter()
    stats = algorithm.pool_stats(apply_fn, algorithm.stack([params]), SyntheticPool(pool_size), jax.random.key(1)[None],
                                 PASSES, CHUNK_SIZE, shared=True, seed_axis=SEED_AXIS)
    seconds = time.perf_counter() - started
    assert stats.entropy.shape == (1, pool_size) and np.isfinite(stats.entropy).all()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"pool_size": pool_size, "peak_rss_mb": peak, "seconds": seconds}))


def _memory_figures(pool_sizes) -> dict:
    """Peak RSS of a fresh process running pool inference over each pool size."""
    results = {}
    for size in pool_sizes:
        logging.info("Memory: pool inference over %d synthetic images in a fresh process ...", size)
        output = subprocess.run(
            [sys.executable, "-m", "experiments.bench", f"--memory_child={size}"],
            check=True, capture_output=True, text=True,
        ).stdout
        child = json.loads(output.strip().splitlines()[-1])
        results[f"pool_inference_peak_rss_mb_{size}"] = child["peak_rss_mb"]
        results[f"pool_inference_seconds_{size}"] = child["seconds"]
    return results


def _torch_figures(pool_size: int, train_samples: int, repeats: int) -> dict:
    import torch
    from torch import nn

    torch.manual_seed(0)

    def block(channels_in):
        return [nn.Conv2d(channels_in, 16, 3, padding=1), nn.LeakyReLU(0.1), nn.Dropout(0.33)]

    net = nn.Sequential(
        *block(1), *block(16), nn.MaxPool2d(2), *block(16), *block(16), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(7 * 7 * 16, 10),
    )
    pool = torch.rand(pool_size, 1, 28, 28)
    batch = 1024

    @torch.no_grad()
    def mc_loop():  # BaaL's default: T sequential stochastic passes per batch
        net.train()
        for start in range(0, pool_size, batch):
            x = pool[start : start + batch]
            torch.stack([torch.softmax(net(x), -1) for _ in range(PASSES)]).mean(0)

    @torch.no_grad()
    def mc_replicate():  # BaaL's replicate_in_memory: one pass over the batch repeated T times
        net.train()
        for start in range(0, pool_size, batch // PASSES):
            x = pool[start : start + batch // PASSES]
            torch.softmax(net(x.repeat(PASSES, 1, 1, 1)), -1).view(PASSES, x.shape[0], 10).mean(0)

    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    labels = torch.zeros(pool_size, dtype=torch.long)
    order = torch.randint(0, pool_size, (train_samples,))

    def epoch():
        net.train()
        for start in range(0, train_samples, 256):
            idx = order[start : start + 256]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(net(pool[idx]), labels[idx])
            loss = loss + 1e-3 * sum((p**2).sum() for n, p in net.named_parameters() if n.endswith("weight"))
            loss.backward()
            optimizer.step()

    return {
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_loop_mc_passes_per_s": pool_size * PASSES / _best_seconds(mc_loop, repeats),
        "torch_replicate_mc_passes_per_s": pool_size * PASSES / _best_seconds(mc_replicate, repeats),
        "torch_train_samples_per_s": train_samples / _best_seconds(epoch, repeats),
    }


def _iteration_seconds() -> float:
    """Wall time of one Algorithm 3.1 iteration (all data, max entropy) on a synthetic 60,000-image pool."""
    import tempfile

    from deepbass_jax import data

    rng = np.random.default_rng(0)
    dataset = data.Dataset("synthetic", rng.uniform(size=(60000, 28, 28, 1)).astype(np.float32),
                           rng.integers(0, 10, 60000).astype(np.int32), None, None, 10)
    config = config_lib.default_config()
    config.initial_epochs = 1
    with tempfile.TemporaryDirectory() as workdir:
        driver = driver_lib.Driver(config, workdir, dataset=dataset)
        driver.initial_fit()
        driver.iterate()  # compiles
        started = time.perf_counter()
        driver.iterate()
        return time.perf_counter() - started


def main(argv):
    del argv
    if _MEMORY_CHILD.value:
        return _memory_child(_MEMORY_CHILD.value)
    quick = _QUICK.value
    pool_size, train_samples, repeats = (512, 1024, 1) if quick else (_POOL.value, _TRAIN.value, _REPEATS.value)
    results = {
        "command": " ".join(["python -m experiments.bench", *sys.argv[1:]]),
        "commit": provenance.commit(),
        "device": provenance.device(),
        "cpu": platform.processor() or platform.machine(),
        "jax_version": jax.__version__,
        "quick": quick,
        "pool_size": pool_size,
        "mc_passes": PASSES,
        "train_samples": train_samples,
    }
    if pool_size and train_samples:
        results.update(_jax_figures(pool_size, train_samples, repeats))
        try:
            results.update(_torch_figures(pool_size, train_samples, repeats))
        except ImportError:
            logging.warning("PyTorch is not installed (pip install -e \".[bench]\"): reporting the JAX figures only.")
    if _ITERATION.value and not quick:
        results["jax_iteration_seconds_60k_pool"] = _iteration_seconds()
    if _MEMORY.value:
        results.update(_memory_figures([int(size) for size in _MEMORY_POOLS.value]))
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if "torch_loop_mc_passes_per_s" in results:
        best_torch_mc = max(results["torch_loop_mc_passes_per_s"], results["torch_replicate_mc_passes_per_s"])
        results["mc_speedup_vs_best_torch"] = results["jax_mc_passes_per_s"] / best_torch_mc
        results["train_speedup_vs_torch"] = results["jax_train_samples_per_s"] / results["torch_train_samples_per_s"]
    for key, value in results.items():
        print(f"{key:36s} {value:.3f}" if isinstance(value, float) else f"{key:36s} {value}")
    if _JSON.value:
        with open(_JSON.value, "w") as handle:
            json.dump(results, handle, indent=2, sort_keys=True)


if __name__ == "__main__":
    app.run(main)
