"""Many seeds at once: R runs of Algorithm 3.1 (simulated oracle) sharing one compiled program.

  results = multi_seed.run_seeds(config, seeds=[0, 1, 2])   # or: python -m experiments.multi_seed ...

Seed r is the run `active.Driver` makes with config.seed = seeds[r]: the same keys (`active.setup_keys`,
`active.iteration_keys`), data, pool split, initial labels, sampling plans, acquisition schedule, policy
and early stopping. The host keeps per-seed label masks, oracles and sampling plans (numpy, as the driver
does); the device work of each iteration (MC-dropout inference on the pool and on the ground truth,
acquisition, pseudo-labels, training steps) runs once for all seeds over a leading seed axis [R] and
compiles once per run. Seeds whose epoch has fewer steps than the longest one (step-wise mode, early
stopping) take exact no-op steps: their whole training state is kept with `jnp.where`.

`seed_axis` says how the seed axis is computed:
  "vmap"  `jax.vmap`: one batched operation per layer for all seeds (per-seed weights make the paper CNN's
          convolutions grouped ones). Results equal the driver's up to float round-off, because a batched
          matrix product or grouped convolution may sum in another order than the unbatched one.
  "map"   `lax.map`: a loop over seeds inside the same compiled program; each operation keeps the shapes of
          a single run, so results match the driver's to the bit in practice (measured on CPU), but nothing
          runs in parallel across seeds.
On the 2-core CPU (paper CNN, 3 seeds, one measurement on a busy machine) a training step took 8x and a
chunk of MC inference 20x as long as one seed's under "vmap" (grouped convolutions), 2x and 4x under "map".
"vmap" is meant for accelerators, where batching seeds fills the device (not measured here). Either way, a
discrete decision (a label bought, a pseudo-label set, an early-stopping epoch) can differ from the
driver's only if a score lies within round-off of a tie or of theta.
`SeedsRun` advances all seeds one iteration at a time and can be snapshotted and continued in another process;
run directories are written by the callers (experiments/campaign.py).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import json
import time
from typing import Callable, Optional, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from deepbass_jax import acquisition, active, data, models, oracle as oracle_lib, train, uncertainty

# How often each per-seed device function was traced (each trace is a compilation); tests check it stays put.
TRACES = collections.Counter()


# ------------------------------------------------------------------------ per-seed device functions
SEED_AXES = ("vmap", "map")


def _per_seed(fn, seed_axis: str, batched: Sequence[bool], *args):
    """fn(*args of seed r) for every seed, over the args flagged in `batched` (leading axis [R]; the others
    are shared): `jax.vmap`, or with seed_axis="map" `lax.map`, a loop inside the one compiled program in
    which every operation keeps the shapes of a single run."""
    if seed_axis == "vmap":
        return jax.vmap(fn, in_axes=tuple(0 if b else None for b in batched))(*args)

    def one(sliced):
        sliced = iter(sliced)
        return fn(*(next(sliced) if b else a for a, b in zip(args, batched)))

    return jax.lax.map(one, tuple(a for a, b in zip(args, batched) if b))


@functools.partial(jax.jit, static_argnames=("apply_fn", "num_passes", "shared_images", "seed_axis"))
def _seeds_chunk_stats(apply_fn, params, images, sample_ids, keys, num_passes: int, shared_images: bool,
                       seed_axis: str):
    """`uncertainty.chunk_stats` per seed: params [R, ...], images [R, B, ...] ([B, ...] if shared), keys [R]
    -> UncertaintyStats with fields [R, B, ...]."""
    TRACES["chunk_stats"] += 1
    one = lambda p, x, k: uncertainty.chunk_stats(apply_fn, p, x, sample_ids, k, num_passes)  # noqa: E731
    return _per_seed(one, seed_axis, (True, not shared_images, True), params, images, keys)


@functools.partial(jax.jit, static_argnames=("count", "policy", "reference", "seed_axis"))
def _seeds_queries(stats, theta, labeled, keys, count: int, policy: str, reference: str, seed_axis: str):
    """`active.query_indices` per seed: stats [R, N, ...], theta [R], labeled [R, N], keys [R] -> [R, count]."""
    TRACES["queries"] += 1
    one = lambda s, t, m, k: active.query_indices(s, t, m, k, count, policy, reference)  # noqa: E731
    return _per_seed(one, seed_axis, (True,) * 4, stats, theta, labeled, keys)


@functools.partial(jax.jit, static_argnames=("mode", "seed_axis"))
def _seeds_pseudo_labels(stats, theta, labeled, selected, mode: str, seed_axis: str):
    """`active.refresh_pseudo_labels` per seed: stats [R, N, ...], theta [R], labeled / selected [R, N] -> [R, N]."""
    TRACES["pseudo_labels"] += 1
    one = functools.partial(active.refresh_pseudo_labels, mode=mode)
    return _per_seed(one, seed_axis, (True,) * 4, stats, theta, labeled, selected)


@functools.partial(jax.jit, donate_argnums=0, static_argnames=("shared_images", "seed_axis"))
def _seeds_train_step(states, images, targets, batch_indices, batch_weights, take_step, shared_images: bool,
                      seed_axis: str):
    """`train.train_step` per seed: states [R], images [R, N, ...] ([N, ...] if shared), targets [R, N],
    batch_indices / batch_weights [R, B], take_step [R] bool. A seed with take_step False keeps its whole
    state (an Adam step on a zero-weight batch would still move it through the L2 term and the moments)."""
    TRACES["train_step"] += 1

    def one(state, images, targets, indices, weights, take):
        new_state, metrics = train.train_step(state, images, targets, indices, weights)
        keep = lambda new, old: jnp.where(take, new, old)  # noqa: E731
        metrics = jax.tree_util.tree_map(lambda m: jnp.where(take, m, jnp.zeros_like(m)), metrics)
        return jax.tree_util.tree_map(keep, new_state, state), metrics

    batched = (True, not shared_images, True, True, True, True)
    return _per_seed(one, seed_axis, batched, states, images, targets, batch_indices, batch_weights, take_step)


# The jitted per-seed functions by their name in TRACES.
DEVICE_FUNCTIONS = {"chunk_stats": _seeds_chunk_stats, "queries": _seeds_queries, "pseudo_labels": _seeds_pseudo_labels,
                    "train_step": _seeds_train_step}


# ------------------------------------------------------------------------------------ host helpers
def _stack(trees):
    """Per-seed pytrees of one structure -> one pytree with a leading seed axis (static fields of the first)."""
    leaves = [jax.tree_util.tree_leaves(tree) for tree in trees]
    stacked = [jnp.stack(seed_leaves) for seed_leaves in zip(*leaves)]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(trees[0]), stacked)


def _unstack(tree, r: int):
    return jax.tree_util.tree_map(lambda x: x[r], tree)


def _pool_stats(apply_fn, params, images, keys, num_passes: int, chunk_size: int, shared: bool, seed_axis: str):
    """`uncertainty.pool_stats` for all seeds: images [R, N, ...] ([N, ...] if shared) -> fields [R, N, ...].

    The same fixed-size zero-padded chunks and per-sample ids as pool_stats, so sample i's masks come from
    fold_in(key_r, i) exactly as in the driver.
    """
    axis = 0 if shared else 1
    num_samples = images.shape[axis]
    parts = []
    for start in range(0, num_samples, chunk_size):
        chunk = jax.lax.slice_in_dim(images, start, min(start + chunk_size, num_samples), axis=axis)
        padding = [(0, 0)] * chunk.ndim
        padding[axis] = (0, start + chunk_size - min(start + chunk_size, num_samples))
        sample_ids = np.arange(start, start + chunk_size, dtype=np.uint32)
        parts.append(_seeds_chunk_stats(apply_fn, params, jnp.pad(chunk, padding), sample_ids, keys,
                                        num_passes=num_passes, shared_images=shared, seed_axis=seed_axis))
    return jax.tree_util.tree_map(lambda *fields: jnp.concatenate(fields, axis=1)[:, :num_samples], *parts)


def _train_epoch(states, images, targets, plans, batch_size: int, shared: bool, seed_axis: str):
    """`train.train_epoch` for every seed over its own plan [(indices [M_r], weights [M_r])], padded to the
    longest: seed r takes ceil(M_r / batch_size) real steps (batches as in train_epoch), then no-ops.

    Returns the states and per seed train.EpochMetrics (None for an empty plan).
    """
    steps = np.array([-(-len(indices) // batch_size) for indices, _ in plans])
    num_seeds, max_steps = len(plans), int(steps.max())
    indices = np.zeros((num_seeds, max_steps * batch_size), np.int32)
    weights = np.zeros((num_seeds, max_steps * batch_size), np.float32)
    for r, (plan_indices, plan_weights) in enumerate(plans):
        indices[r, : len(plan_indices)], weights[r, : len(plan_weights)] = plan_indices, plan_weights
    take_step = np.arange(max_steps)[None, :] < steps[:, None]  # [R, S]
    total_loss, total_correct, total_count = 0.0, 0, 0
    for s in range(max_steps):
        batch = slice(s * batch_size, (s + 1) * batch_size)
        states, metrics = _seeds_train_step(states, images, targets, indices[:, batch], weights[:, batch],
                                            take_step[:, s], shared_images=shared, seed_axis=seed_axis)
        total_loss += metrics.loss  # accumulated on device, in the driver's order, per seed
        total_correct += metrics.correct
        total_count += metrics.count
    if max_steps == 0:
        return states, [None] * num_seeds
    total_loss, total_correct, total_count = (np.asarray(x) for x in (total_loss, total_correct, total_count))
    results = []
    for r in range(num_seeds):
        if steps[r] == 0:
            results.append(None)
            continue
        loss = float(total_loss[r]) / int(steps[r])
        if not np.isfinite(loss):
            raise FloatingPointError(f"seed index {r}: training loss became {loss}.")
        results.append(train.EpochMetrics(loss, float(total_correct[r]) / float(total_count[r]), int(steps[r])))
    return states, results


@dataclasses.dataclass
class _Seed:
    """The host-side part of one seed's run: what `active.Driver` holds, without a workdir."""

    config: ml_collections.ConfigDict  # with config.seed = this seed
    key: jax.Array
    source: data.Dataset  # as loaded (seeds with the same source and pool share the pool images)
    dataset: data.Dataset  # test set cut to config.test_size
    val_indices: np.ndarray
    pool_indices: np.ndarray
    pool_images: np.ndarray  # [N, ...]
    hidden_labels: np.ndarray  # [N]
    oracle: oracle_lib.SimulatedOracle
    state: active.RunState
    metrics: list = dataclasses.field(default_factory=list)
    oracle_log: list = dataclasses.field(default_factory=list)

    def buy(self, indices: np.ndarray, iteration: int) -> int:
        """Lines 9-11, as `Driver._buy` without the log file: labels for `indices`, which leave D."""
        labels = self.oracle.label(indices)
        self.oracle_log += [{"iteration": iteration, "index": int(i), "label": int(g)}
                            for i, g in zip(indices, labels)]
        self.state.ground_truth[indices] = labels
        self.state.pseudo[indices] = -1
        return len(indices)


def _setup(config, seeds, dataset: Optional[data.Dataset]) -> list[_Seed]:
    loaded = {}  # data config (JSON) -> Dataset: seeds that share a data config share one load
    runs = []
    for seed in seeds:
        seed_config = copy.deepcopy(config)  # deepcopy keeps field references (yinyang: data.seed = seed)
        seed_config.seed = int(seed)
        source = dataset
        if source is None:
            data_key = seed_config.data.to_json(sort_keys=True)
            if data_key not in loaded:
                loaded[data_key] = data.load(seed_config.data)
            source = loaded[data_key]
        if source.train_labels is None:
            raise ValueError(f"data {config.data.name!r} has no labels: the simulated oracle needs them.")
        split, val_indices, pool_indices = active.split_pool(seed_config, source)
        hidden_labels = source.train_labels[pool_indices]
        num_pool = len(pool_indices)
        state = active.RunState(0, None, np.full(num_pool, -1, np.int32), np.full(num_pool, -1, np.int32))
        runs.append(_Seed(seed_config, jax.random.key(seed_config.seed), source, split, val_indices, pool_indices,
                          source.train_images[pool_indices], hidden_labels,
                          oracle_lib.SimulatedOracle(hidden_labels), state))
    first = runs[0]
    for run in runs[1:]:
        if run.pool_images.shape != first.pool_images.shape or run.dataset.num_classes != first.dataset.num_classes:
            raise ValueError(
                f"seed {run.config.seed} has a pool of {run.pool_images.shape} with {run.dataset.num_classes} "
                f"classes but seed {first.config.seed} one of {first.pool_images.shape} with "
                f"{first.dataset.num_classes}: seeds run at once need pools of one shape."
            )
    if config.active and config.budget > len(first.pool_indices):
        raise ValueError(f"config.budget={config.budget} exceeds the pool of {len(first.pool_indices)} samples.")
    return runs


# ------------------------------------------------------------------------------------------ the run
@dataclasses.dataclass(frozen=True)
class _Device:
    """What every seed's device work shares."""

    config: ml_collections.ConfigDict
    apply_fn: models.ApplyFn
    images: jax.Array  # the pools, [R, N, ...], or [N, ...] when every seed has the same pool
    shared_images: bool
    seed_axis: str

    def train_epoch(self, states, targets, plans):
        return _train_epoch(states, self.images, targets, plans, self.config.train.batch_size, self.shared_images,
                            self.seed_axis)


def _initial_fit(device: _Device, runs: list[_Seed], states):
    """Lines 1-2: buy the initial ground truth, then fit on it alone; each seed stops by train.fit's rule."""
    config = device.config
    num_pool = len(runs[0].pool_indices)
    for run in runs:
        run.buy(active.initial_indices(run.config, run.hidden_labels, num_pool, run.dataset.num_classes), 0)
    fit_keys = [active.setup_keys(run.key)[2] for run in runs]
    targets = jnp.asarray(np.stack([run.state.targets() for run in runs]))
    no_selection = np.zeros(num_pool, bool)
    best, since_best, fitting = [-1.0] * len(runs), [0] * len(runs), [True] * len(runs)
    empty = (np.zeros(0, np.int32), np.zeros(0, np.float32))  # a seed that stopped: only no-op steps
    for epoch in range(config.initial_epochs):
        plans = [train.sampling_plan(run.state.labeled, no_selection, jax.random.fold_in(key, epoch),
                                     config.train.upsample) if on else empty
                 for run, key, on in zip(runs, fit_keys, fitting)]
        states, epochs = device.train_epoch(states, targets, plans)
        for r, metrics in enumerate(epochs):
            if metrics is not None:
                improved = metrics.accuracy > best[r]
                best[r], since_best[r] = (metrics.accuracy, 0) if improved else (best[r], since_best[r] + 1)
                fitting[r] = not (config.initial_patience and since_best[r] >= config.initial_patience)
        if not any(fitting):
            break
    for r, run in enumerate(runs):
        line = {"iteration": 0, "labels": int(run.state.labeled.sum()), "bought": int(run.state.labeled.sum())}
        line.update(active.held_out_accuracy(device.apply_fn, _unstack(states.params, r), run.dataset, run.val_indices))
        run.metrics.append(line)
    return states


def _iterate(device: _Device, runs: list[_Seed], states, iteration: int):
    """One iteration of Algorithm 3.1 (lines 4-12) for every seed, as `active.Driver.iterate`."""
    config, apply_fn, seed_axis = device.config, device.apply_fn, device.seed_axis
    started = time.perf_counter()
    phases = _PhaseClock()
    keys = [active.iteration_keys(run.key, iteration) for run in runs]  # pool, labeled, acquire, plan
    pool_keys, labeled_keys, acquire_keys = (jnp.stack([k[i] for k in keys]) for i in range(3))
    labeled = np.stack([run.state.labeled for run in runs])  # [R, N]
    num_labeled = set(labeled.sum(axis=1).tolist())
    if len(num_labeled) != 1:  # cannot happen: every seed buys `count` labels from a large enough pool
        raise RuntimeError(f"seeds hold different numbers of labels {sorted(num_labeled)} in iteration {iteration}.")

    # Line 5 and eq. 8: MC-dropout inference on the pool (T') and on the ground truth (T).
    stats = _pool_stats(apply_fn, states.params, device.images, pool_keys, config.mc_passes_pool, config.chunk_size,
                        device.shared_images, seed_axis)
    phases.lap("pool_inference", stats)
    labeled_images = jnp.asarray(np.stack([run.pool_images[np.flatnonzero(m)] for run, m in zip(runs, labeled)]))
    labeled_stats = _pool_stats(apply_fn, states.params, labeled_images, labeled_keys, config.mc_passes_labeled,
                                config.labeled_chunk_size, False, seed_axis)
    # theta per seed on the host (eq. 8, or the fixed config.theta), as the driver computes it.
    theta = np.stack([np.asarray(active.threshold(config, e), np.float32)
                      for e in np.asarray(labeled_stats.entropy)])  # [R]
    phases.lap("labeled_inference")

    # Lines 8-11: one schedule for all seeds (they hold the same number of labels).
    bought = [0] * len(runs)
    count = active.acquisition_count(config, iteration, num_labeled.pop())
    if count:
        chosen = np.asarray(_seeds_queries(stats, theta, jnp.asarray(labeled), acquire_keys, count=count,
                                           policy=config.policy, reference=config.above_average_reference,
                                           seed_axis=seed_axis))
        bought = [run.buy(acquisition.valid_indices(c), iteration) for run, c in zip(runs, chosen)]

    # Lines 6-7, eqs. 4 and 9: refresh every pseudo-label in D, then grow D (step-wise) or take all.
    if config.semi_supervised:
        pseudo = np.asarray(_seeds_pseudo_labels(
            stats, theta, jnp.asarray(np.stack([run.state.labeled for run in runs])),
            jnp.asarray(np.stack([run.state.selected for run in runs])), mode=config.mode, seed_axis=seed_axis))
        for run, seed_pseudo in zip(runs, pseudo):
            run.state.pseudo = np.array(seed_pseudo, np.int32)

    # Line 12: one epoch on each seed's D, each with its own plan.
    plans = [train.sampling_plan(run.state.labeled, run.state.selected, k[3], config.train.upsample,
                                 config.train.pseudo_weight) for run, k in zip(runs, keys)]
    targets = jnp.asarray(np.stack([run.state.targets() for run in runs]))
    phases.lap("acquisition_and_pseudo_labels")
    states, epochs = device.train_epoch(states, targets, plans)  # returns after the last step's loss reached the host
    phases.lap("epoch")
    seconds = time.perf_counter() - started

    entropy = np.asarray(stats.entropy)
    for r, run in enumerate(runs):
        run.state.iteration = iteration
        run.state.train_state = _unstack(states, r)
        line = active.metrics_line(run.config, apply_fn, run.pool_images, run.hidden_labels, run.state, entropy[r],
                                   theta[r], bought[r], epochs[r].loss, seconds)
        line.update(active.held_out_accuracy(apply_fn, run.state.train_state.params, run.dataset, run.val_indices))
        line["phase_seconds"] = phases.seconds  # the same dict for every seed: the phases ran for all at once
        run.metrics.append(line)
    phases.lap("metrics")
    return states


class _PhaseClock:
    """Wall seconds of the phases of one iteration, all seeds together; `lap` waits for the device first."""

    def __init__(self):
        self.seconds = {}
        self._last = time.perf_counter()

    def lap(self, phase: str, *results) -> None:
        jax.block_until_ready(results)
        now = time.perf_counter()
        self.seconds[phase] = now - self._last
        self._last = now


class SeedsRun:
    """R runs of Algorithm 3.1 (simulated oracle) advancing together: `step()` runs the initial fit, then one
    iteration per call. `snapshot()` holds everything needed to continue; `SeedsRun(..., snapshot=s)` continues
    exactly where it was taken, so a run split over several processes equals an uninterrupted one.

    `dataset` replaces `data.load(config.data)` for every seed; without it each seed loads the data its
    config describes (the yin-yang toy draws its sample from the seed). `seed_axis`: "vmap" or "map".
    """

    def __init__(self, config: ml_collections.ConfigDict, seeds: Sequence[int], dataset: Optional[data.Dataset] = None,
                 seed_axis: str = "vmap", snapshot: Optional[dict] = None):
        if config.oracle != "simulated":
            raise ValueError(
                f"config.oracle={config.oracle!r}: many seeds at once needs config.oracle='simulated' (a person "
                "cannot answer R runs in lockstep); run each seed with experiments.main instead."
            )
        active.validate(config)
        if config.train.augment_degrees or config.train.augment_scale:
            raise active.ConfigError(
                f"config.train.augment_degrees={config.train.augment_degrees} / augment_scale="
                f"{config.train.augment_scale}: ground-truth augmentation is not supported by many seeds at once; "
                "set both to 0, or run each seed with experiments.main instead."
            )
        if len(seeds) == 0:
            raise ValueError("seeds is empty: give at least one seed.")
        if seed_axis not in SEED_AXES:
            raise ValueError(f"seed_axis={seed_axis!r} is unknown; choose one of {SEED_AXES}.")
        self.config, self.seeds, self.seed_axis = config, [int(seed) for seed in seeds], seed_axis
        self.runs = _setup(config, self.seeds, dataset)
        first = self.runs[0]
        shared = all(run.source is first.source and np.array_equal(run.pool_indices, first.pool_indices)
                     for run in self.runs)
        images = jnp.asarray(first.pool_images if shared else np.stack([run.pool_images for run in self.runs]))
        module = models.build(config.model, first.dataset.num_classes)
        self.apply_fn = models.make_apply(module)
        self.device = _Device(config, self.apply_fn, images, shared, seed_axis)
        self.states = _stack([active.initial_train_state(module, self.apply_fn, run.key, first.dataset.input_shape,
                                                         config.train) for run in self.runs])
        self.iteration = -1  # -1: before the initial fit; 0: after it; i: after iteration i
        self.initial_steps = None
        if snapshot is not None:
            self._restore(snapshot)

    @property
    def done(self) -> bool:
        return self.iteration >= self.config.iterations

    def step(self) -> list[dict]:
        """The initial fit (first call) or the next iteration; returns each seed's new metrics line."""
        if self.done:
            raise RuntimeError(f"the run is done: all {self.config.iterations} iterations ran.")
        if self.iteration < 0:
            self.states = _initial_fit(self.device, self.runs, self.states)
            self.initial_steps = np.asarray(self.states.step).tolist()
        else:
            self.states = _iterate(self.device, self.runs, self.states, self.iteration + 1)
        self.iteration += 1
        return [run.metrics[-1] for run in self.runs]

    def results(self) -> list[dict]:
        """Per seed a dict with
          seed, test_accuracy (final; None without test data),
          metrics: the driver's metrics lines, iteration 0 first ("seconds": the iteration, all seeds together;
            "phase_seconds": {pool_inference, labeled_inference, acquisition_and_pseudo_labels, epoch, metrics}),
          oracle_log: the driver's oracle log lines {iteration, index, label},
          initial_steps, steps: training steps after the initial fit and in all,
          params: the final parameters; ground_truth, pseudo: [N] int32, -1 where none; pool_indices [N].
        """
        steps = np.asarray(self.states.step).tolist()
        return [
            {
                "seed": run.config.seed,
                "test_accuracy": run.metrics[-1].get("test_accuracy") if run.metrics else None,
                "metrics": run.metrics,
                "oracle_log": run.oracle_log,
                "initial_steps": None if self.initial_steps is None else self.initial_steps[r],
                "steps": steps[r],
                "params": _unstack(self.states.params, r),
                "ground_truth": run.state.ground_truth,
                "pseudo": run.state.pseudo,
                "pool_indices": run.pool_indices,
            }
            for r, run in enumerate(self.runs)
        ]

    def snapshot(self) -> dict:
        """Everything `SeedsRun(..., snapshot=...)` needs to continue after the current iteration: the stacked
        train states, each seed's labels, pseudo-labels, oracle state, metrics and oracle log (checkpoint.save
        writes it)."""
        states = self.states.replace(dropout_key=jax.random.key_data(self.states.dropout_key))
        label_type = np.int8 if self.runs[0].dataset.num_classes <= 127 else np.int32  # -1 ... C-1
        return {
            "config": self.config.to_json_best_effort(sort_keys=True),
            "seeds": np.array(self.seeds, np.int64),
            "seed_axis": self.seed_axis,
            "iteration": self.iteration,
            "initial_steps": np.array(self.initial_steps if self.initial_steps is not None else [], np.int64),
            "states": jax.device_get(flax.serialization.to_state_dict(states)),
            "runs": {str(r): {"ground_truth": run.state.ground_truth.astype(label_type),
                              "pseudo": run.state.pseudo.astype(label_type),
                              "oracle": run.oracle.state_dict(),
                              "metrics": json.dumps(run.metrics),
                              "oracle_log": json.dumps(run.oracle_log)}
                     for r, run in enumerate(self.runs)},
        }

    def _restore(self, snapshot: dict) -> None:
        expected = {"config": self.config.to_json_best_effort(sort_keys=True), "seeds": self.seeds,
                    "seed_axis": self.seed_axis}
        found = {"config": snapshot["config"], "seeds": np.asarray(snapshot["seeds"]).tolist(),
                 "seed_axis": snapshot["seed_axis"]}
        differ = [key for key in expected if expected[key] != found[key]]
        if differ:
            raise ValueError(f"the snapshot belongs to another run (different {' and '.join(differ)}); continue it "
                             "with the config, seeds and seed axis it was taken with.")
        template = self.states.replace(dropout_key=jax.random.key_data(self.states.dropout_key))
        states = flax.serialization.from_state_dict(template, snapshot["states"])
        self.states = jax.device_put(states.replace(dropout_key=jax.random.wrap_key_data(states.dropout_key)))
        self.iteration = int(snapshot["iteration"])
        self.initial_steps = np.asarray(snapshot["initial_steps"]).tolist() if self.iteration >= 0 else None
        for r, run in enumerate(self.runs):
            saved = snapshot["runs"][str(r)]
            run.state.ground_truth = np.asarray(saved["ground_truth"], np.int32)
            run.state.pseudo = np.asarray(saved["pseudo"], np.int32)
            run.state.iteration = max(self.iteration, 0)
            run.state.train_state = _unstack(self.states, r)
            run.oracle.load_state_dict(saved["oracle"])
            run.metrics = json.loads(saved["metrics"])
            run.oracle_log = json.loads(saved["oracle_log"])


def run_seeds(config: ml_collections.ConfigDict, seeds: Sequence[int], dataset: Optional[data.Dataset] = None,
              seed_axis: str = "vmap", on_iteration: Optional[Callable[[int, list[dict]], None]] = None) -> list[dict]:
    """Runs Algorithm 3.1 for every seed in `seeds` at once to the end; returns `SeedsRun.results()`.

    `on_iteration(iteration, lines)` is called after the initial fit (iteration 0) and after every iteration
    with each seed's newest metrics line; an exception it raises stops the run.
    """
    run = SeedsRun(config, seeds, dataset, seed_axis)
    while not run.done:
        lines = run.step()
        if on_iteration is not None:
            on_iteration(run.iteration, lines)
        logging.log_every_n_seconds(logging.INFO, "iteration %d: test accuracy %s", 30, run.iteration,
                                    [line.get("test_accuracy") for line in lines])
    return run.results()


def summarize(results: list[dict]) -> dict:
    """Per-seed final test accuracy with its mean and sample standard deviation (ddof=1; 0 for one seed)."""
    accuracies = [result["test_accuracy"] for result in results]
    if any(a is None for a in accuracies):
        raise ValueError("some seeds have no test accuracy: the data set has no labeled test split.")
    return {
        "seeds": [result["seed"] for result in results],
        "labels": [result["metrics"][-1]["labels"] for result in results],
        "test_accuracy": accuracies,
        "mean": float(np.mean(accuracies)),
        "std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0,
    }
