"""The DeepBASS driver: Algorithm 3.1 (active EM with pseudo-labels) for one seed or R at once, the one stateful
shell of the project.

Sets are masks over the fixed pool: `ground_truth[i] >= 0` marks X (labels bought from the oracle),
`pseudo[i] >= 0` marks the pseudo-labeled part of D (eq. 9) with its current pseudo-label (eq. 4).
Every random choice of iteration t comes from fold_in(key, t), so a resumed run repeats an uninterrupted one.
The device work runs for all seeds at once (`algorithm`); the driver holds one oracle per seed, the run
folder, the checkpoint and the metrics. With config.num_seeds = R > 1, seed s's files go to WORKDIR/seed_<s>/
and one checkpoint holds every seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from deepbass_jax import (
    acquisition,
    algorithm,
    checkpoint,
    config as config_lib,
    data,
    data_parallel,
    distributed,
    metrics as metrics_lib,
    models,
    oracle as oracle_lib,
    progress,
    rundir,
    runfolder,
    train,
    uncertainty,
)
from deepbass_jax.algorithm import RunState
from deepbass_jax.runfolder import CHECKPOINT, METRICS, SUMMARY


class PhaseClock:
    """Wall seconds of the phases of one iteration (all seeds together); each lap ends once the host has the
    phase's results, which every phase but the epoch copies to the host anyway."""

    def __init__(self):
        self.seconds = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = now - self._last
        self._last = now


class RunFinished(Exception):
    """The workdir holds a finished run; it is not run again."""


@dataclasses.dataclass
class Seed:
    """One seed's run: its data, pool, oracle, folder and state (the train state lives stacked in the driver)."""

    config: ml_collections.ConfigDict  # config.seed = this seed
    key: jax.Array
    folder: pathlib.Path
    dataset: data.Dataset  # test set cut to config.test_size
    val_indices: np.ndarray
    pool_indices: np.ndarray
    pool_ids: np.ndarray  # [N] int64: each pool sample's row in the user's file (queries, logs and exports use it)
    pool_images: np.ndarray  # [N, ...]; with several processes only this process's shard [hi - lo, ...]
    hidden_labels: Optional[np.ndarray]  # [N], for metrics only: the driver learns labels through the oracle
    oracle: Optional[oracle_lib.Oracle]  # process 0's alone
    state: RunState


class _NoLock:
    """What a process other than 0 holds instead of the workdir lock: it never touches the workdir."""

    held = True

    def release(self, remove: bool = False) -> None:
        del remove


_NO_LOCK = _NoLock()


def _config_json(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort(sort_keys=True))


class Driver:
    """Runs Algorithm 3.1 in `workdir` for seeds config.seed ... config.seed + num_seeds - 1, resuming from its
    checkpoint when there is one."""

    def __init__(self, config: ml_collections.ConfigDict, workdir, dataset: Optional[data.Dataset] = None):
        """`dataset` replaces `data.load(config.data)`, e.g. for data already in memory."""
        config_lib.validate(config)
        self.config = config
        self.workdir = pathlib.Path(workdir)
        self.topology = distributed.current()  # one process of one, unless jax.distributed joined several
        self.leader = self.topology.leader  # the only process that touches the workdir
        created = not self.workdir.exists()
        if self.leader:
            rundir.check_writable(self.workdir)  # before any work: a read-only or full disk fails now, not later
        self._lock = rundir.Lock(self.workdir) if self.leader else _NO_LOCK  # released by run() or on failure
        try:
            self._set_up(dataset)
        except BaseException:  # a refused setting or input: the workdir stays as reusable as it was
            self._lock.release(remove=True)
            if created and self.workdir.exists() and not any(self.workdir.iterdir()):
                self.workdir.rmdir()
            raise

    def _set_up(self, dataset: Optional[data.Dataset]) -> None:
        """Everything __init__ does while holding the workdir lock."""
        config = self.config
        seed_configs = config_lib.seed_configs(config)
        folders = [runfolder.seed_folder(self.workdir, c.seed, config.num_seeds) for c in seed_configs]
        self._check_processes()
        for seed_config, folder in zip(seed_configs, folders) if self.leader else []:
            runfolder.check_config_file(folder, _config_json(seed_config))
        if self._agreed(self.leader and all((folder / SUMMARY).exists() for folder in folders)):
            raise RunFinished(f"{self.workdir} holds a finished run ({folders[0] / SUMMARY}); choose another "
                              "--workdir to run again.")
        loaded = {}  # data config (JSON) -> Dataset: seeds with the same data config share one load
        self._device_test_images = {}  # test images' memory -> (them, their device copy), made when first evaluated
        self.seeds = []
        for seed_config, folder in zip(seed_configs, folders):
            source = dataset
            if source is None:
                data_key = seed_config.data.to_json(sort_keys=True)
                if data_key not in loaded:
                    loaded[data_key] = data.load(seed_config.data)
                source = loaded[data_key]
            if source.train_labels is None and config.oracle == "simulated":
                raise ValueError(f"data {config.data.name!r} has no labels: use --config.oracle=file.")
            models.check_input_shape(config.model, source.input_shape)
            split, val_indices, pool_indices = algorithm.split_pool(seed_config, source)
            hidden = None if source.train_labels is None else source.train_labels[pool_indices]
            pool_ids = source.row_ids[pool_indices]
            self.num_pool = num_pool = len(pool_indices)
            self.pool_lo, self.pool_hi = self.topology.shard(self.num_pool)
            pool_images = source.train_images[pool_indices[self.pool_lo: self.pool_hi]]  # all of it when alone
            if self.topology.count > 1:  # keep only this process's shard; the validation set is refused above
                split = dataclasses.replace(split, train_images=pool_images, train_labels=None, ids=None)
            oracle = None  # process 0's alone
            if config.oracle == "simulated" and self.leader:
                oracle = oracle_lib.SimulatedOracle(hidden)
            elif config.oracle == "file":
                value_range = self._value_range(pool_images)  # every process takes part
                if self.leader:
                    oracle = oracle_lib.FileOracle(folder / "oracle", source.num_classes,
                                                   wait_seconds=config.oracle_wait_seconds,
                                                   class_names=source.class_names, value_range=value_range)
            self.seeds.append(Seed(seed_config, jax.random.key(seed_config.seed), folder, split, val_indices,
                                   pool_indices, pool_ids, pool_images, hidden, oracle,
                                   RunState(0, None, np.full(num_pool, -1, np.int32), np.full(num_pool, -1, np.int32))))
        first = self.seeds[0]
        for seed in self.seeds[1:]:
            if (seed.pool_images.shape, seed.dataset.num_classes) != (first.pool_images.shape, first.dataset.num_classes):
                raise ValueError(
                    f"seed {seed.config.seed} has a pool of {seed.pool_images.shape} with {seed.dataset.num_classes} "
                    f"classes but seed {first.config.seed} one of {first.pool_images.shape} with "
                    f"{first.dataset.num_classes}: seeds run at once need pools of one shape."
                )
        self.shared_pool = all(np.array_equal(s.pool_indices, first.pool_indices) and s.dataset.train_images is
                               first.dataset.train_images for s in self.seeds)
        self.pool_images = jnp.asarray(first.pool_images if self.shared_pool else
                                       np.stack([s.pool_images for s in self.seeds]))
        self.seed_axis = config_lib.seed_axis(config)
        self.module = models.build(config.model, first.dataset.num_classes)
        self.apply_fn = models.make_apply(self.module)
        self.mesh = uncertainty.pool_mesh(config.pool_devices)
        if config_lib.augmenting(config) and first.pool_images.ndim != 4:
            raise config_lib.ConfigError(
                f"config.train.augment_degrees={config.train.augment_degrees} / augment_scale="
                f"{config.train.augment_scale} / augment_shift={config.train.augment_shift} warp images "
                f"[N, H, W, C], but {config.data.name!r} has samples of shape {tuple(first.pool_images.shape[1:])}; "
                "set them to 0."
            )
        config_lib.check_budget(config, self.num_pool)
        for seed in self.seeds:  # checks initial_per_class against the pool and its rarest class
            algorithm.initial_indices(seed.config, seed.hidden_labels, len(seed.pool_indices), seed.dataset.num_classes)
        for seed in self.seeds if self.leader else []:  # only now: a refused config must not be pinned
            runfolder.pin_config_file(seed.folder, _config_json(seed.config))
        logging.info("Evaluation: %s.", first.dataset.evaluation())
        if self.topology.count > 1:
            logging.info("Process %d of %d: pool samples [%d, %d) of %d.", self.topology.index, self.topology.count,
                         self.pool_lo, self.pool_hi, self.num_pool)
        self.iteration = 0
        self.states = None
        self.checkpointed: Optional[int] = None  # the iteration the newest checkpoint holds (None: none yet)
        self.pool_scores: Optional[uncertainty.UncertaintyStats] = None  # the last iteration's, [R, N, ...]
        self._warned_edits: set = set()

    def _check_processes(self) -> None:
        """What several processes cannot do (yet), refused before any work."""
        config, count = self.config, self.topology.count
        if count == 1:
            return
        checks = [
            ("num_seeds", config.num_seeds == 1, "1 (one run over several processes)"),
            ("val_size", config.val_size == 0, "0 (a validation set would need every process's images)"),
            ("train.augment_degrees", not config_lib.augmenting(config),
             "0 with train.augment_scale and train.augment_shift 0 (augmentation is single-process)"),
            ("model.dropout_masks", config.model.dropout_masks == "hash",
             "'hash' (its masks follow a row's place in the global batch)"),
            ("train.batch_size", config.train.batch_size % count == 0,
             f"a multiple of the {count} processes (each takes an equal slice of every batch)"),
        ]
        for field, ok, expected in checks:
            if not ok:
                raise config_lib.ConfigError(f"config.{field} must be {expected} when {count} processes run.")

    def _value_range(self, local_images: np.ndarray) -> tuple[float, float]:
        """(low, high) of the pool's values over every process: one contrast for every sample shown to a person."""
        low, high = float(local_images.min()), float(local_images.max())
        if self.topology.count > 1:
            ranges = distributed.allgather(np.array([low, high], np.float64))
            low, high = float(ranges[:, 0].min()), float(ranges[:, 1].max())
        return (low, high) if high > low else (low, low + 1.0)

    def _images(self, seed: Seed, indices) -> np.ndarray:
        """Images of pool samples `indices` [n] (global positions) -> [n, ...]; with several processes every
        process must call it at the same point (each contributes the rows of its shard)."""
        indices = np.asarray(indices, np.int64)
        if self.topology.count == 1:
            return np.asarray(seed.pool_images[indices])
        return distributed.gather_rows(np.asarray(seed.pool_images), self.num_pool, indices, self.topology)

    # ---------------------------------------------------------------------------------- one seed's view
    @property
    def hidden_labels(self) -> Optional[np.ndarray]:
        """The first seed's hidden pool labels (a single run's)."""
        return self.seeds[0].hidden_labels

    @property
    def state(self) -> RunState:
        """The first seed's state with its train state (a single run's)."""
        return self.seed_state(0)

    def seed_state(self, r: int) -> RunState:
        state = self.seeds[r].state
        state.iteration = self.iteration
        state.train_state = algorithm.unstack(self.states, r)
        return state

    # ------------------------------------------------------------------------------------ the oracle
    def _buy(self, seed: Seed, indices: np.ndarray, iteration: int) -> int:
        """Lines 9-11: ground truth for `indices`, logged (fsynced) before use.

        Labels an interrupted earlier attempt logged for this iteration are reused, never asked again; the oracle
        replays them, so its state is that of an uninterrupted run. Only samples without a complete log line are
        asked: a line torn by a kill (cut off on resume) was not durably logged, so that label is asked again,
        as is an answer that arrived but was killed before its line was written (it cannot be logged earlier).
        With several processes process 0 does all of that and the others learn the labels from it.
        """
        indices = np.asarray(indices, np.int64)
        many = self.topology.count > 1
        bought, labels, failure = np.zeros(0, np.int64), np.zeros(0, np.int32), None
        ask = np.zeros(0, np.int64)
        if self.leader:
            logged = runfolder.logged_labels(seed.folder, iteration)
            bought = np.array(list(logged), np.int64)
            labels = np.array(list(logged.values()), np.int32)
            if len(bought):
                seed.oracle.replay(bought, labels)
            unlogged = [i for i in indices.tolist() if i not in logged]
            ask = np.array(unlogged[: max(len(indices) - len(logged), 0)], np.int64)
        if many:  # the others bring the images of the samples asked
            ask = self._from_leader(ask, len(indices))
        images = self._images(seed, ask) if len(ask) else None
        context = self._query_context(seed)
        if self.leader and len(ask):
            try:
                answers = np.asarray(seed.oracle.label(ask, images, seed.pool_ids[ask], context), np.int32)
                rundir.fault_point("after_oracle")
                runfolder.log_labels(seed.folder, iteration, ask, answers, seed.pool_ids[ask])
                rundir.fault_point("after_oracle_log")
                bought, labels = np.concatenate([bought, ask]), np.concatenate([labels, answers])
            except Exception as error:  # pylint: disable=broad-except
                if not many:
                    raise
                failure = error
        if many:
            status = 0 if failure is None else 1 if isinstance(failure, oracle_lib.LabelsPending) else 2
            status = int(distributed.broadcast(np.array(status, np.int32)))
            if failure is not None:
                raise failure
            if status:
                raise (oracle_lib.LabelsPending("process 0 waits for labels (see its log); once they are in, start "
                                                "the same launch again on every process.") if status == 1 else
                       distributed.ProcessLost("process 0 stopped the run; see its log for why."))
            bought = self._from_leader(bought, len(indices))
            labels = self._from_leader(labels, len(indices))
        seed.state.ground_truth[bought] = labels
        seed.state.pseudo[bought] = -1
        return len(bought)

    def _from_leader(self, values: np.ndarray, most: int) -> np.ndarray:
        """Process 0's 1-D `values` (at most `most` entries, >= 0) on every process."""
        padded = np.full(most, -1, values.dtype)
        if self.leader:
            padded[: len(values)] = values
        padded = distributed.broadcast(padded)
        return padded[padded >= 0]

    def _query_context(self, seed: Seed) -> Optional[dict]:
        """Vector data and a person as the oracle: the pool and its labeled points, to place queried points among
        them (with several processes every one takes part)."""
        if seed.pool_images.ndim != 2 or self.config.oracle != "file":
            return None
        points = np.asarray(seed.pool_images)
        if self.topology.count > 1:
            points = distributed.gather_shards(points, self.num_pool, self.topology)
        labeled = seed.state.labeled
        return {"points": points, "labeled_points": points[labeled], "labeled_labels": seed.state.ground_truth[labeled]}

    def _correct_labels(self, seed: Seed, iteration: int) -> bool:
        """Applies the seed folder's corrections.csv (id,label) to labels bought earlier, logging each change as a
        correction (process 0 only); warns once about answers.csv rows edited after the run took them. Returns
        whether a label changed."""
        path = seed.folder / runfolder.CORRECTIONS
        changes = []
        if path.exists():
            position = {int(i): p for p, i in enumerate(seed.pool_ids)}
            corrections = runfolder.read_corrections(
                path, lambda text: oracle_lib.parse_label(text, seed.dataset.num_classes, seed.dataset.class_names))
            for sample_id, label in corrections.items():
                where = position.get(sample_id)
                if where is None or seed.state.ground_truth[where] < 0:
                    if (sample_id, "unbought") not in self._warned_edits:
                        logging.warning("%s: id %d has no bought label to correct (corrections apply to labels "
                                        "the oracle gave); row ignored.", path, sample_id)
                        self._warned_edits.add((sample_id, "unbought"))
                elif seed.state.ground_truth[where] != label:
                    logging.warning("Correcting the label of id %d from %d to %d (%s).", sample_id,
                                    seed.state.ground_truth[where], label, path)
                    changes.append((where, sample_id, label))
            if changes:
                where, ids, labels = (np.array(column) for column in zip(*changes))
                runfolder.log_labels(seed.folder, iteration, where, labels, ids, correction=True)
                seed.state.ground_truth[where] = labels
        if isinstance(seed.oracle, oracle_lib.FileOracle):
            for sample_id, label, answers in seed.oracle.edited_answers(runfolder.current_labels(seed.folder)):
                if (sample_id, label) not in self._warned_edits:
                    self._warned_edits.add((sample_id, label))
                    logging.warning(
                        "%s now gives id %d the label %d, but the run took this file before the edit and uses the "
                        "logged label %d. To correct a label, add the row '%d,%d' to %s (columns id,label): it is "
                        "applied at the next iteration.", answers, sample_id, label,
                        runfolder.current_labels(seed.folder)[sample_id], sample_id, label, path)
        return bool(changes)

    # ------------------------------------------------------------------------------ checkpointing
    def _fresh_states(self) -> train.TrainState:
        input_shape = self.seeds[0].dataset.input_shape
        return algorithm.stack([algorithm.initial_train_state(self.module, self.apply_fn, s.key, input_shape,
                                                              self.config.train) for s in self.seeds])

    def _save(self) -> None:
        self.checkpointed = self.iteration
        if not self.leader:
            return
        runfolder.save_run(self.workdir, self.iteration, self.states, [
            {"ground_truth": s.state.ground_truth, "pseudo": s.state.pseudo, "oracle": s.oracle.state_dict()}
            for s in self.seeds])

    def _restore(self) -> bool:
        """Continues from the newest good checkpoint (False: none, a fresh run). With several processes process 0
        reads it and hands the state to the others."""
        fresh = self._fresh_states()
        restored = runfolder.restore_run(self.workdir, fresh, [s.folder for s in self.seeds]) if self.leader else None
        if self.topology.count > 1:
            restored = self._restored_from_leader(restored, fresh)
        if restored is None:
            return False
        self.iteration, self.states, saved = restored
        self.checkpointed = self.iteration
        for seed, seed_saved in zip(self.seeds, saved):
            if seed.oracle is not None:
                seed.oracle.load_state_dict(seed_saved["oracle"])
            seed.state.ground_truth, seed.state.pseudo = seed_saved["ground_truth"], seed_saved["pseudo"]
        return True

    def _restored_from_leader(self, restored, fresh):
        """Process 0's `runfolder.restore_run` result (or None) on every process."""
        iteration = distributed.broadcast(np.array(-1 if restored is None else restored[0], np.int64))
        if iteration < 0:
            return None
        seed = self.seeds[0]
        states, saved = (restored[1], restored[2]) if self.leader else (fresh, [
            {"ground_truth": seed.state.ground_truth, "pseudo": seed.state.pseudo}])
        raw = states.replace(dropout_key=jax.random.key_data(states.dropout_key))
        raw = jax.tree_util.tree_map(jnp.asarray, distributed.broadcast(raw))
        labels = distributed.broadcast((saved[0]["ground_truth"], saved[0]["pseudo"]))
        saved = [{"ground_truth": np.array(labels[0], np.int32), "pseudo": np.array(labels[1], np.int32),
                  "oracle": saved[0].get("oracle")}]
        return int(iteration), raw.replace(dropout_key=jax.random.wrap_key_data(raw.dropout_key)), saved

    # --------------------------------------------------------------------------------- the algorithm
    def _labeled(self) -> np.ndarray:
        return np.stack([s.state.labeled for s in self.seeds])  # [R, N]

    def _targets(self) -> jax.Array:
        return jnp.asarray(np.stack([s.state.targets() for s in self.seeds]))  # [R, N]

    def _train_epoch(self, plans):
        config = self.config
        if self.topology.count > 1:  # one seed, its batches split over the processes
            state, epoch = data_parallel.train_epoch(algorithm.unstack(self.states, 0), self.pool_images,
                                                     self.num_pool, np.asarray(self._targets()[0]), plans[0],
                                                     config.train.batch_size, self.topology)
            return algorithm.stack([state]), [epoch]
        return algorithm.train_epoch(self.states, self.pool_images, self._targets(), plans, config.train.batch_size,
                                     self.shared_pool, self.seed_axis, self._labeled(),
                                     config.train.augment_degrees, config.train.augment_scale,
                                     config.train.augment_shift, config.train.steps_per_call)

    def initial_fit(self) -> None:
        """Lines 1-2: buy the initial ground truth, then fit on it alone (upsampled); each seed stops by
        `algorithm.Patience`. Ground-truth augmentation (config.train.augment_*) warps every plan entry."""
        config = self.config
        self.states = self._fresh_states()
        for seed in self.seeds:
            indices = algorithm.initial_indices(seed.config, seed.hidden_labels, len(seed.pool_indices),
                                                seed.dataset.num_classes)
            self._buy(seed, indices, iteration=0)
        fit_keys = [algorithm.setup_keys(seed.key)[2] for seed in self.seeds]
        patience = [algorithm.Patience()] * len(self.seeds)
        fitting = [True] * len(self.seeds)
        empty = (np.zeros(0, np.int32), np.zeros(0, np.float32))  # a seed that stopped: only no-op steps
        with progress.Progress(config.initial_epochs, "initial fit") as bar, self._stop_on_nan(0):
            for epoch in range(config.initial_epochs):
                plans = [train.sampling_plan(s.state.labeled, np.zeros_like(s.state.labeled),
                                             jax.random.fold_in(key, epoch), config.train.upsample) if on else empty
                         for s, key, on in zip(self.seeds, fit_keys, fitting)]
                self.states, epochs = self._train_epoch(plans)
                for r, epoch_metrics in enumerate(epochs):
                    if epoch_metrics is not None:
                        patience[r] = patience[r].update(epoch_metrics.accuracy)
                        fitting[r] = not patience[r].stop(config.initial_patience)
                bar.update(1)
                rundir.fault_point("initial_fit_epoch")  # where tests/fault_test.py kills a run during the fit
                if not any(fitting):
                    break
        self._require_finite(0, "the network's parameters after the initial fit", self.states.params)
        logging.info("Initial fit: %s steps.", np.asarray(self.states.step).tolist())

    def iterate(self) -> list[dict]:
        """One iteration of Algorithm 3.1 (lines 4-12) for every seed; returns each seed's metrics line."""
        config, seeds, axis = self.config, self.seeds, self.seed_axis
        started = time.perf_counter()
        phases = PhaseClock()
        iteration = self.iteration + 1
        rundir.fault_point("iteration")  # where tests kill one process of several
        for seed in seeds:
            changed = self._correct_labels(seed, iteration) if self.leader else False
            if self.topology.count > 1 and distributed.broadcast(np.array(changed)):
                seed.state.ground_truth = distributed.broadcast(seed.state.ground_truth)
        keys = [algorithm.iteration_keys(s.key, iteration) for s in seeds]  # pool, labeled, acquire, plan
        pool_keys, labeled_keys, acquire_keys = (jnp.stack([k[i] for k in keys]) for i in range(3))
        labeled = self._labeled()
        num_labeled = set(labeled.sum(axis=1).tolist())
        if len(num_labeled) != 1:  # cannot happen: every seed buys `count` labels from a large enough pool
            raise RuntimeError(f"seeds hold different numbers of labels {sorted(num_labeled)} in iteration "
                               f"{iteration}.")

        # Line 5 and eq. 8: MC-dropout inference on the pool (T') and, where theta is computed, the ground truth (T).
        stats = self._pool_stats(pool_keys)
        self._require_finite(iteration, "the pool's MC-dropout mean probabilities", stats.mean_probs)
        phases.lap("pool_inference")
        theta, logged_theta = self._theta(iteration, labeled, labeled_keys)
        phases.lap("labeled_inference")

        # Lines 8-11 before 6-7: both use this iteration's MC statistics, and a sample bought now must be ground
        # truth, not a pseudo-label, in the D that lines 6-7 form and line 12 trains on.
        bought = [0] * len(seeds)
        count = algorithm.acquisition_count(config, iteration, num_labeled.pop())
        if count:
            chosen = np.asarray(algorithm.seeds_queries(
                stats, theta, jnp.asarray(labeled), acquire_keys, count=count, policy=config.policy,
                reference=config.above_average_reference, seed_axis=axis))
            if self.topology.count > 1:  # every process computed the same; process 0's choice is the one
                chosen = distributed.broadcast(chosen)
            bought = [self._buy(s, acquisition.valid_indices(c), iteration) for s, c in zip(seeds, chosen)]

        # Lines 6-7, eqs. 4 and 9: refresh every pseudo-label in D, then grow D (step-wise) or take all.
        if config.semi_supervised:
            pseudo = np.asarray(algorithm.seeds_pseudo_labels(
                stats, theta, jnp.asarray(self._labeled()), jnp.asarray(np.stack([s.state.selected for s in seeds])),
                mode=config.mode, seed_axis=axis))
            for seed, seed_pseudo in zip(seeds, pseudo):
                seed.state.pseudo = np.array(seed_pseudo, np.int32)

        # Line 12: one epoch on each seed's D = ground truth x upsample + pseudo-labeled samples.
        plans = [train.sampling_plan(s.state.labeled, s.state.selected, k[3], config.train.upsample,
                                     config.train.pseudo_weight) for s, k in zip(seeds, keys)]
        phases.lap("acquisition_and_pseudo_labels")
        with self._stop_on_nan(iteration):
            self.states, epochs = self._train_epoch(plans)  # augments the ground-truth entries only
        phases.lap("epoch")
        self.pool_scores = stats  # what labels.csv reports for this iteration
        self._require_finite(iteration, "the training loss", [epoch.loss for epoch in epochs])
        self._require_finite(iteration, "the network's parameters after training", self.states.params)
        self.iteration = iteration
        seconds = time.perf_counter() - started
        lines = []
        ground_truth = [np.flatnonzero(s.state.labeled) for s in seeds]
        ground_truth_images = np.stack([self._images(s, indices) for s, indices in zip(seeds, ground_truth)])
        if self.leader:  # the metrics are process 0's to write
            with self._stop_on_nan(iteration):
                ground_truth_accuracy = algorithm.seeds_accuracy(
                    self.apply_fn, self.states.params, ground_truth_images,
                    np.stack([s.state.ground_truth[indices] for s, indices in zip(seeds, ground_truth)]), False, axis,
                    "ground-truth")
            held_out = self._held_out_accuracy()
        phases.lap("accuracy")
        for r, seed in enumerate(seeds if self.leader else []):
            seed.state.iteration = iteration  # the line needs the sets alone, not the network (seed_state(r))
            line = metrics_lib.metrics_line(seed.config, seed.hidden_labels, seed.state, stats.entropy[r],
                                            logged_theta[r], bought[r], epochs[r].loss, ground_truth_accuracy[r],
                                            seconds)
            line.update(held_out[r])
            line["phase_seconds"] = phases.seconds  # all seeds together; "metrics" (these lines) is filled in below
            lines.append(line)
        phases.lap("metrics")
        return lines

    def _theta(self, iteration: int, labeled: np.ndarray, keys) -> tuple[np.ndarray, list]:
        """(The theta [R] the iteration decides with, the one its lines log): algorithm.threshold, from T MC passes
        over each seed's ground truth (labeled [R, N]) where the run computes eq. 8 (algorithm.computes_theta).
        Without them the lines log a fixed config.theta, or None in all data (theta = 1): nothing there reads eq. 8."""
        config, seeds = self.config, self.seeds
        if not algorithm.computes_theta(config):
            theta = np.full(len(seeds), algorithm.threshold(config), np.float32)
            return theta, list(theta) if config.theta >= 0 else [None] * len(seeds)
        # On the host: pool_stats pads its last chunk there, so a new number of labels compiles nothing.
        images = np.stack([self._images(s, np.flatnonzero(m)) for s, m in zip(seeds, labeled)])
        stats = algorithm.pool_stats(self.apply_fn, self.states.params, images, keys, config.mc_passes_labeled,
                                     config.labeled_chunk_size, False, self.seed_axis, self.mesh)
        theta = np.stack([np.asarray(algorithm.threshold(config, e), np.float32) for e in stats.entropy])
        self._require_finite(iteration, "theta (eq. 8: the ground truth's mean MC-dropout entropy)", theta)
        return theta, list(theta)

    def _held_out_accuracy(self) -> list[dict]:
        """Each seed's test (and validation) accuracy; all seeds in one program per set."""
        seeds = self.seeds
        test = {}
        if seeds[0].dataset.test_images is not None and seeds[0].dataset.test_labels is not None:
            # One device copy per test set (the memory it occupies: the views seeds take of one array share it),
            # kept with the array so that the memory stays its own: it is evaluated every iteration.
            where = tuple((s.dataset.test_images.__array_interface__["data"][0], s.dataset.test_images.shape,
                           s.dataset.test_images.strides, s.dataset.test_images.dtype.str) for s in seeds)
            shared = len(set(where)) == 1
            if where not in self._device_test_images:
                host = seeds[0].dataset.test_images if shared else np.stack([s.dataset.test_images for s in seeds])
                self._device_test_images[where] = (host, jnp.asarray(host))
            test = {"test_images": self._device_test_images[where][1], "shared_test": shared,
                    "test_labels": seeds[0].dataset.test_labels if shared else
                    np.stack([s.dataset.test_labels for s in seeds])}
        validation = {}
        if len(seeds[0].val_indices):
            validation = {"val_images": np.stack([s.dataset.train_images[s.val_indices] for s in seeds]),
                          "val_labels": np.stack([s.dataset.train_labels[s.val_indices] for s in seeds])}
        with self._stop_on_nan(self.iteration):
            return metrics_lib.held_out_accuracy(self.apply_fn, self.states.params, self.seed_axis, **test,
                                                 **validation)

    # ------------------------------------------------------------------------------- NaN / Inf guard
    @contextlib.contextmanager
    def _stop_on_nan(self, iteration: int):
        """Turns a FloatingPointError inside into one naming `iteration` (0: the initial fit) and what is kept."""
        try:
            yield
        except FloatingPointError as error:
            raise self._nan_error(iteration, str(error).rstrip(".")) from error

    def _require_finite(self, iteration: int, what: str, values) -> None:
        """Stops the run when `values` (an array, a scalar or a pytree of arrays, over all seeds) hold NaN or Inf."""
        if not all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree_util.tree_leaves(values)):
            raise self._nan_error(iteration, f"NaN or Inf in {what}")

    def _nan_error(self, iteration: int, problem: str) -> FloatingPointError:
        """The error that stops the run in `iteration`; nothing of that iteration is saved (`run` writes its
        checkpoint and metrics lines only after `iterate` returns)."""
        if iteration == 0:
            where = "the initial fit"
            kept = "no checkpoint was written yet (the first one follows the initial fit)"
        else:
            where = f"iteration {iteration}"
            kept = (f"the last good checkpoint {self.workdir / CHECKPOINT} (after iteration {iteration - 1}) is "
                    f"intact and {METRICS} has no line for iteration {iteration}")
        return FloatingPointError(
            f"{where}: {problem}. The run stopped; {kept}. Running the same command again would meet the same "
            "numbers: look for extreme input values, or lower config.train.learning_rate in a new --workdir."
        )

    # ------------------------------------------------------------------------------------------ run
    def run(self, should_stop: Optional[Callable[[], bool]] = None):
        """Runs to the last iteration and returns the summary (a list of per-seed summaries when
        config.num_seeds > 1). `should_stop()`, asked after each checkpoint, ends the process's work early
        (None is returned); running again resumes. The workdir lock is held until this returns or fails (or the
        process dies: the kernel releases it)."""
        if not self._lock.held:
            self._lock = rundir.Lock(self.workdir) if self.leader else _NO_LOCK
        try:
            return self._run(should_stop)
        finally:
            self._lock.release()

    def _run(self, should_stop):
        if not self._restore():
            self.initial_fit()
            held_out = self._held_out_accuracy() if self.leader else []
            for seed, seed_held_out in zip(self.seeds, held_out):
                initial = {"iteration": 0, "labels": int(seed.state.labeled.sum()),
                           "bought": int(seed.state.labeled.sum())}
                initial.update(seed_held_out)
                checkpoint.rewrite_jsonl(seed.folder / METRICS, [initial])
                logging.info("Initial model of seed %d: %s", seed.config.seed, initial)
            self._save()
        with progress.Progress(self.config.iterations, "iterations", initial=self.iteration) as bar:
            while self.iteration < self.config.iterations:
                if should_stop is not None and self._agreed(should_stop()):
                    return None
                lines = self.iterate()
                for seed, line in zip(self.seeds, lines):
                    checkpoint.append_jsonl(seed.folder / METRICS, [line])
                every = self.config.labels_export_every
                if every > 0 and self.iteration % every == 0:
                    self._export_labels(self.pool_scores)
                self._save()
                bar.update(1)
                logging.log_every_n_seconds(logging.INFO, "iteration %d: %s", 30, self.iteration, lines)
        if self.config.labels_export_every >= 0:
            self._export_labels(self._final_pool_scores())
        summaries = [self._finish(r) for r in range(len(self.seeds))]
        if not self.leader:
            return None  # process 0 wrote the summary
        return summaries[0] if len(summaries) == 1 else summaries

    def _agreed(self, answer: bool) -> bool:
        """Process 0's `answer` on every process (a decision all of them must take together)."""
        return bool(distributed.broadcast(np.array(answer))) if self.topology.count > 1 else answer

    def _final_pool_scores(self) -> uncertainty.UncertaintyStats:
        """MC-dropout scores of the pool under the final network (the keys an iteration after the last would use)."""
        return self._pool_stats(jnp.stack([algorithm.iteration_keys(s.key, self.config.iterations + 1)[0]
                                           for s in self.seeds]))

    def _pool_stats(self, keys) -> uncertainty.UncertaintyStats:
        """Line 5: MC-dropout scores of the whole pool [R, N, ...]; with several processes each scores its shard
        (sample i keeps its masks: fold_in(key, i)) and the scores are gathered."""
        config = self.config
        stats = algorithm.pool_stats(self.apply_fn, self.states.params, self.pool_images, keys, config.mc_passes_pool,
                                     config.chunk_size, self.shared_pool, self.seed_axis, self.mesh,
                                     first_id=self.pool_lo)
        if self.topology.count == 1:
            return stats
        return uncertainty.UncertaintyStats(*(distributed.gather_shards(field[0], self.num_pool, self.topology)[None]
                                              for field in stats))

    def _export_labels(self, scores: uncertainty.UncertaintyStats) -> None:
        """labels.csv of every seed: what the labeling budget bought for each pool sample."""
        for r, seed in enumerate(self.seeds if self.leader else []):
            runfolder.write_labels(seed.folder, seed.pool_ids, seed.state.ground_truth, seed.state.pseudo,
                                   scores.mean_probs[r], scores.entropy[r], seed.dataset.class_names)

    def _finish(self, r: int) -> Optional[dict]:
        seed = self.seeds[r]
        if seed.config.figures and seed.pool_images.ndim == 2 and seed.pool_images.shape[1] == 2:
            points = np.asarray(seed.pool_images)
            if self.topology.count > 1:
                points = distributed.gather_shards(points, self.num_pool, self.topology)
            if self.leader:
                from deepbass_jax import plots  # matplotlib: 0.4 s of every start, for runs that finish

                plots.decision_boundary(self.apply_fn, algorithm.unstack(self.states.params, r), points,
                                        seed.state.labeled, seed.hidden_labels, seed.folder / "decision_boundary.png")
        if not self.leader:
            return None
        title = f"{seed.config.get('preset') or seed.config.data.name}, seed {seed.config.seed} ({seed.folder})"
        summary = runfolder.write_summary(seed.folder, self.iteration, int(seed.state.labeled.sum()), title,
                                          seed.config.figures)  # marks done
        logging.info("Finished %s: %s", seed.folder, summary)
        return summary


def run(config: ml_collections.ConfigDict, workdir):
    """Runs (or resumes) `config` in `workdir`; see `Driver.run`."""
    return Driver(config, workdir).run()
