"""The DeepBASS driver: Algorithm 3.1 (active EM with pseudo-labels) for one seed or R at once, the one stateful
shell of the project. `iterate` reads as the paper's lines 4-12; each line is a pure function of `algorithm`.

Sets are masks over the fixed pool: `ground_truth[i] >= 0` marks X (labels bought from the oracle),
`pseudo[i] >= 0` marks the pseudo-labeled part of D (eq. 9) with its current pseudo-label (eq. 4).
Every random choice of iteration t comes from fold_in(key, t), so a resumed run repeats an uninterrupted one.
Labels come through each seed's `oracle.ledger.Ledger`; files go through `workdir`; what processes exchange goes
through `parallel.collective` (nothing, alone). With config.num_seeds = R > 1, seed s's files go to
WORKDIR/seed_<s>/ and one checkpoint holds every seed.
"""

from __future__ import annotations

import pathlib
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from deepbass_jax import acquisition, algorithm, config as config_lib, data, metrics as metrics_lib, models, nan_guard
from deepbass_jax import progress, seeds as seeds_lib, train, uncertainty
from deepbass_jax.algorithm import RunState
from deepbass_jax.parallel import collective as collective_lib
from deepbass_jax.workdir import guard, runfolder
from deepbass_jax.seeds import RunFinished, Seed  # noqa: F401 (RunFinished: what the driver refuses with)
from deepbass_jax.workdir.runfolder import CHECKPOINT, METRICS


class Driver:
    """Runs Algorithm 3.1 in `workdir` for seeds config.seed ... config.seed + num_seeds - 1, resuming from its
    checkpoint when there is one."""

    def __init__(self, config: ml_collections.ConfigDict, workdir, dataset: Optional[data.Dataset] = None):
        """`dataset` replaces `data.load(config.data)`, e.g. for data already in memory."""
        self.collective = collective_lib.current()  # one process of one, unless jax.distributed joined several
        config_lib.validate(config, self.collective.count)
        self.config, self.workdir = config, pathlib.Path(workdir)
        self.leader = self.collective.leader  # the only process that touches the workdir
        created = not self.workdir.exists()
        self._lock = guard.claim(self.workdir, self.leader)  # released by run() or on failure
        try:
            self._set_up(dataset)
        except BaseException:  # a refused setting or input: the workdir stays as reusable as it was
            guard.release_refused(self._lock, self.workdir, created)
            raise

    def _set_up(self, dataset: Optional[data.Dataset]) -> None:
        """Everything __init__ does while holding the workdir lock: the seeds (stage 2 of validation), the model."""
        config, collective = self.config, self.collective
        self.seeds, self.num_pool, (self.pool_lo, _) = seeds_lib.make_seeds(config, self.workdir, dataset, collective)
        first = self.seeds[0]
        self.shared_pool, self.pool_images = seeds_lib.pool_on_device(self.seeds)  # [N, ...] shared, else [R, N, ...]
        self.seed_axis = config_lib.seed_axis(config)
        self.apply_fn = models.make_apply(models.build(config.model, first.dataset.num_classes))
        self.mesh = uncertainty.pool_mesh(config.pool_devices)
        for seed in self.seeds if self.leader else []:  # only now: a refused config must not be pinned
            runfolder.pin_config_file(seed.folder, seeds_lib.config_json(seed.config))
        logging.info("Evaluation: %s. %s", first.dataset.evaluation(),
                     seeds_lib.label_plan(config, first, first.dataset.num_classes))
        self.nan = nan_guard.NanGuard(self.workdir / CHECKPOINT, METRICS)
        self.held_out = metrics_lib.HeldOut.of_seeds(self.seeds)
        stop_set = metrics_lib.stop_set_indices(self.num_pool, config.stop_set_size, config.seed)
        self.stop_signal = metrics_lib.StopSignal(np.stack([self._images(s, stop_set) for s in self.seeds]),
                                                  first.dataset.num_classes)
        self.iteration, self.states = 0, None
        self.checkpointed: Optional[int] = None  # the iteration the newest checkpoint holds (None: none yet)
        self.pool_scores: Optional[uncertainty.UncertaintyStats] = None  # the last iteration's, [R, N, ...]

    # ---------------------------------------------------------------------------------- one seed's view
    @property
    def state(self) -> RunState:
        """The first seed's state with its train state (a single run's)."""
        return self.seed_state(0)

    def seed_state(self, r: int) -> RunState:
        state = self.seeds[r].state
        state.iteration = self.iteration
        state.train_state = algorithm.unstack(self.states, r)
        return state

    # ------------------------------------------------------------------------------ the algorithm
    def initial_fit(self) -> None:
        """Lines 1-2: buy the initial ground truth, then fit on it alone (upsampled); each seed stops by
        `algorithm.Patience`. Ground-truth augmentation (config.train.augment_*) warps every plan entry."""
        config, seeds = self.config, self.seeds
        self.states = self._fresh_states()
        for seed in seeds:
            seed.buy(0, seed.initial_query(seed.dataset.num_classes), config.oracle, self.collective, self.num_pool)
        fit_keys = [algorithm.setup_keys(seed.key)[2] for seed in seeds]
        patience, fitting = [algorithm.Patience()] * len(seeds), [True] * len(seeds)
        empty = (np.zeros(0, np.int32), np.zeros(0, np.float32))  # a seed that stopped: only no-op steps
        with progress.Progress(config.initial_epochs, "initial fit") as bar, self.nan.stop_on_nan(0):
            for epoch in range(config.initial_epochs):
                plans = [train.sampling_plan(s.state.labeled, np.zeros_like(s.state.labeled),
                                             jax.random.fold_in(key, epoch), config.train.upsample) if on else empty
                         for s, key, on in zip(seeds, fit_keys, fitting)]
                self.states, epochs = self._train_epoch(plans)
                patience, fitting = algorithm.fit_on(patience, epochs, config.initial_patience)
                bar.update(1)
                guard.fault_point("initial_fit_epoch")  # where tests/fault_test.py kills a run during the fit
                if not any(fitting):
                    break
        self.nan.require_finite(0, "the network's parameters after the initial fit", self.states.params)
        logging.info("Initial fit: %s steps.", np.asarray(self.states.step).tolist())

    def clean_restart(self) -> list[dict]:
        """After the last iteration: a freshly initialized network trained config.restart_epochs epochs on each
        seed's final D ("a clean restart with the final data splitting", section 6); per seed its held-out
        metrics. The iterations' network stays the run's network (self.states)."""
        iterated, epochs = self.states, self.config.restart_epochs
        with progress.Progress(epochs, "clean restart") as bar, self.nan.stop_on_nan(self.iteration):
            self._fit_fresh([jax.random.fold_in(seed.key, algorithm.RESTART_STREAM) for seed in self.seeds], epochs,
                            bar)
        restarted = self.held_out.accuracy(self.apply_fn, self.states.params, self.seed_axis) if self.leader else []
        self.states = iterated
        return [{"epochs": epochs, **metrics} for metrics in restarted]

    def _fit_fresh(self, keys, epochs: int, bar: Optional[progress.Progress] = None) -> list:
        """Fresh networks, seed r's from run key keys[r], trained `epochs` epochs on each seed's D (ground truth x
        upsample and its pseudo-labeled samples): the clean restart and DBAL's retraining; the last epoch's
        metrics."""
        self.states = self._fresh_states(keys)
        for epoch in range(epochs):
            self.states, metrics = self._train_epoch(self._plans(
                [jax.random.fold_in(algorithm.setup_keys(key)[2], epoch) for key in keys],
                self.config.train.pseudo_weight))
            if bar is not None:
                bar.update(1)
        return metrics

    def iterate(self) -> list[dict]:
        """One iteration of Algorithm 3.1 (lines 4-12) for every seed; returns each seed's metrics line."""
        phases, iteration = progress.PhaseClock(), self.iteration + 1
        guard.fault_point("iteration")  # where tests kill one process of several
        for seed in self.seeds:  # a person's corrections.csv, before anything uses the labels
            seed.state.ground_truth = seed.ledger.correct(iteration, seed.state.ground_truth)
        keys = [algorithm.iteration_keys(s.key, iteration) for s in self.seeds]  # pool, labeled, acquire, plan
        pool_keys, labeled_keys, acquire_keys, plan_keys = ([k[i] for k in keys] for i in range(4))

        # Line 5 and eq. 8: MC-dropout inference on the pool (T') and, where theta is computed, the ground truth (T).
        subsets = algorithm.pool_subsets(  # DBAL (config.pool_subset): [R, S] pool indices; None: the whole pool
            self.config.pool_subset, [s.key for s in self.seeds], self._labeled(), iteration)
        stats = self._pool_stats(jnp.stack(pool_keys), subsets)  # fields [R, N or S, ...]
        self.nan.require_finite(iteration, "the pool's MC-dropout mean probabilities", stats.mean_probs)
        phases.lap("pool_inference")
        theta, logged_theta = self._theta(iteration, jnp.stack(labeled_keys))
        phases.lap("labeled_inference")

        # Lines 8-11 before 6-7: both use this iteration's MC statistics, and a sample bought now must be ground
        # truth, not a pseudo-label, in the D that lines 6-7 form and line 12 trains on.
        bought = self._acquire(iteration, stats, theta, jnp.stack(acquire_keys), subsets)
        stats = algorithm.on_whole_pool(stats, subsets, self.num_pool)  # [R, N, ...], NaN where not scored

        # Lines 6-7, eqs. 4 and 9: refresh every pseudo-label in D, then grow D (step-wise) or take all.
        if self.config.semi_supervised:
            seeds_lib.refresh_pseudo_labels(self.seeds, stats, theta, self.config, self.seed_axis)
        phases.lap("acquisition_and_pseudo_labels")

        # Line 12: one epoch on each seed's D = ground truth x upsample + pseudo-labeled samples.
        epochs = self._train(iteration, plan_keys)
        phases.lap("epoch")
        self.pool_scores, self.iteration = stats, iteration  # pool_scores: what labels.csv reports
        return self._metrics_lines(iteration, stats, logged_theta, bought, epochs, phases)

    def _acquire(self, iteration: int, stats, theta, keys, subsets=None) -> list[int]:
        """Lines 8-11: every k-th iteration each seed buys the labels its policy chooses (process 0's choice); with
        subsets [R, S] (config.pool_subset) stats [R, S, ...] are theirs and the policy chooses among them."""
        count = algorithm.acquisition_count(self.config, iteration, int(self.seeds[0].state.labeled.sum()))
        if not count:
            return [0] * len(self.seeds)
        chosen = self.collective.broadcast(algorithm.seeds_choices(
            self.config, self.apply_fn, self.states.params, stats, theta, self._labeled(), keys, count, subsets,
            lambda r, indices: self._images(self.seeds[r], indices), self.seed_axis))
        return [s.buy(iteration, acquisition.valid_indices(c), self.config.oracle, self.collective, self.num_pool)
                for s, c in zip(self.seeds, chosen)]

    def _train(self, iteration: int, plan_keys) -> list:
        """Line 12 for every seed; its epoch metrics. mu of eq. 6 follows config.train's ramp (Lee's alpha(t))."""
        with self.nan.stop_on_nan(iteration):
            if self.config.retrain_epochs:  # DBAL: a fresh network, E epochs, instead of one more epoch of this one
                epochs = self._fit_fresh([algorithm.retrain_key(s.key, iteration) for s in self.seeds],
                                         self.config.retrain_epochs)
            else:  # augments the ground-truth entries only
                plans = self._plans(plan_keys, train.pseudo_weight_at(self.config.train, iteration))
                self.states, epochs = self._train_epoch(plans)
        self.nan.require_finite(iteration, "the training loss", [epoch.loss for epoch in epochs])
        self.nan.require_finite(iteration, "the network's parameters after training", self.states.params)
        return epochs

    def _theta(self, iteration: int, keys) -> tuple[np.ndarray, list]:
        """(The theta [R] the iteration decides with, the one its lines log): `algorithm.seeds_theta` over each
        seed's ground truth, whose images it needs only where the run computes eq. 8."""
        images = self._ground_truth()[0] if algorithm.computes_theta(self.config) else None
        theta, logged = algorithm.seeds_theta(self.config, self.apply_fn, self.states.params, images, keys,
                                              self.seed_axis, self.mesh, len(self.seeds))
        self.nan.require_finite(iteration, "theta (eq. 8: the ground truth's mean MC-dropout entropy)", theta)
        return theta, logged

    def _pool_stats(self, keys, subsets=None) -> uncertainty.UncertaintyStats:
        """Line 5: MC-dropout scores of the whole pool [R, N, ...] (config.pool_dropout False: the deterministic
        network's); each process scores its shard (sample i keeps its masks: fold_in(key, i)). A score of the
        user's (config.policy an import path) is computed alongside. subsets [R, S] (config.pool_subset): those
        samples of each seed alone, [R, S, ...], sample i still with the masks of fold_in(key, i)."""
        c, images, shared = self.config, self.pool_images, self.shared_pool
        if subsets is not None:  # one process (config.validate)
            images, shared = np.stack([self._images(s, indices) for s, indices in zip(self.seeds, subsets)]), False
        stats = algorithm.pool_stats(
            self.apply_fn, self.states.params, images, keys, c.mc_passes_pool, c.chunk_size, shared,
            self.seed_axis, self.mesh, self.pool_lo, acquisition.score_function(c.policy), c.pool_dropout,
            pool_ids=subsets)
        return stats if subsets is not None else self.collective.gather_stats(stats, self.num_pool)

    def _plans(self, keys, mu: float) -> list:
        """Each seed's epoch plan over its D (`train.sampling_plan`), its pseudo-labels weighted by mu."""
        train_config = self.config.train
        return [train.sampling_plan(s.state.labeled, s.state.selected, key, train_config.upsample, mu,
                                    train_config.pseudo_balance) for s, key in zip(self.seeds, keys)]

    def _train_epoch(self, plans):
        """Line 12 for every seed (over the processes, data-parallel), the ground-truth entries augmented; with
        config.train.pseudo_targets "step" the steps compute the pseudo-labeled samples' targets (-1 here)."""
        computed = self.config.train.pseudo_targets == "step"
        if self.config.train.even_batches:
            plans = [train.even_batches(*plan, self.config.train.batch_size) for plan in plans]
        targets = jnp.asarray(np.stack([s.state.targets(computed) for s in self.seeds]))  # [R, N]
        return self.collective.train_epoch(self.states, self.pool_images, self.num_pool, targets, plans,
                                           self.config.train, self.shared_pool, self.seed_axis, self._labeled())

    def _metrics_lines(self, iteration, stats, logged_theta, bought, epochs, phases) -> list[dict]:
        """Each seed's metrics line (process 0's to write): what the iteration did and the held-out accuracy."""
        seconds, (images, labels) = phases.elapsed(), self._ground_truth()
        if self.leader:
            with self.nan.stop_on_nan(iteration):
                ground_truth_accuracy = algorithm.seeds_accuracy(self.apply_fn, self.states.params, images, labels,
                                                                 False, self.seed_axis, "ground-truth")
                held_out = self.held_out.accuracy(self.apply_fn, self.states.params, self.seed_axis)
                agreement = self.stop_signal.agreement(self.held_out, self.apply_fn, self.states.params,
                                                       self.seed_axis)  # stop-set kappa [R] with the last network
        phases.lap("accuracy")
        lines = [] if not self.leader else metrics_lib.seeds_lines(
            self.seeds, iteration, stats.entropy, logged_theta, bought, epochs, ground_truth_accuracy, seconds,
            held_out, agreement, phases.seconds)
        phases.lap("metrics")
        return lines

    # ---------------------------------------------------------------------------------- the pool's samples
    def _labeled(self) -> np.ndarray:
        return np.stack([s.state.labeled for s in self.seeds])  # [R, N]

    def _ground_truth(self) -> tuple[np.ndarray, np.ndarray]:
        """Each seed's ground truth: images [R, n, ...] and labels [R, n]; every process calls it together."""
        indices = [np.flatnonzero(s.state.labeled) for s in self.seeds]
        return (np.stack([self._images(s, i) for s, i in zip(self.seeds, indices)]),
                np.stack([s.state.ground_truth[i] for s, i in zip(self.seeds, indices)]))

    def _images(self, seed: Seed, indices) -> np.ndarray:
        return seed.images(indices, self.collective, self.num_pool)  # [n, ...]

    # ------------------------------------------------------------------------------------ checkpoints
    def _fresh_states(self, keys=None) -> train.TrainState:
        """Untrained networks, seed r's from run key keys[r] (None: each seed's own key, the initial fit's)."""
        return algorithm.initial_train_states(self.apply_fn, keys or [s.key for s in self.seeds],
                                              self.seeds[0].dataset.input_shape, self.config.train)

    def _save(self) -> None:
        self.checkpointed = self.iteration
        if self.leader:
            runfolder.save_run(self.workdir, self.iteration, self.states, [s.state_dict() for s in self.seeds])

    def _restore(self) -> bool:
        """Continues from the newest good checkpoint (False: none, a fresh run); process 0 reads it and the
        collective hands it to the others."""
        fresh = self._fresh_states()
        restored = runfolder.restore_run(self.workdir, fresh, [s.folder for s in self.seeds]) if self.leader else None
        restored = self.collective.restored(restored, fresh, self.num_pool)
        if restored is None:
            return False
        self.iteration, self.states, saved = restored
        self.checkpointed = self.iteration
        for seed, seed_saved in zip(self.seeds, saved):
            seed.load_state_dict(seed_saved)
        return True

    # ------------------------------------------------------------------------------------------- run
    def run(self, should_stop: Optional[Callable[[], bool]] = None):
        """Runs to the last iteration and returns the summary (a list of per-seed summaries when
        config.num_seeds > 1). `should_stop()`, asked after each checkpoint, ends the process's work early
        (None is returned); running again resumes. The workdir lock is held until this returns or fails (or the
        process dies: the kernel releases it)."""
        if not self._lock.held:
            self._lock = guard.claim(self.workdir, self.leader)
        try:
            return self._run(should_stop)
        finally:
            self._lock.release()

    def _run(self, should_stop):
        if not self._restore():
            self.initial_fit()
            held_out = self.held_out.accuracy(self.apply_fn, self.states.params, self.seed_axis) if self.leader else []
            for seed, seed_held_out in zip(self.seeds, held_out):
                seed.write_initial_metrics(seed_held_out)
            self._save()
        if self.leader:  # the network the next iteration's stopping signal compares with
            self.stop_signal.agreement(self.held_out, self.apply_fn, self.states.params, self.seed_axis)
        with progress.Progress(self.config.iterations, "iterations", initial=self.iteration) as bar:
            while self.iteration < self.config.iterations and not self.collective.agreed(self._stable()):
                if should_stop is not None and self.collective.agreed(should_stop()):
                    return None
                lines = self.iterate()
                for seed, line in zip(self.seeds, lines):
                    runfolder.append_metrics(seed.folder, line, self.config.tensorboard)
                every = self.config.labels_export_every  # an iteration that scored a subset: at the end only
                if every > 0 and self.iteration % every == 0 and not self.config.pool_subset:
                    self._export_labels(self.pool_scores)
                self._save()
                bar.update(1)
                logging.log_every_n_seconds(logging.INFO, "iteration %d: %s", 30, self.iteration, lines)
        if self.config.labels_export_every >= 0:
            self._export_labels(self._pool_stats(jnp.stack([  # under the final network: an iteration after the last
                algorithm.iteration_keys(s.key, self.config.iterations + 1)[0] for s in self.seeds])))
        restarted = self.clean_restart() if self.config.restart_epochs else []
        summaries = [seed.finish(self.apply_fn, algorithm.unstack(self.states.params, r), self.collective,
                                 self.num_pool, self.iteration, restarted[r] if restarted else None)
                     for r, seed in enumerate(self.seeds)]
        if not self.leader:
            return None  # process 0 wrote the summary
        return summaries[0] if len(summaries) == 1 else summaries

    def _stable(self) -> bool:
        """config.stop_when_stable: whether stabilizing predictions end the run now (process 0 decides)."""
        if stable := self.leader and metrics_lib.stable([s.folder for s in self.seeds], self.config.stop_when_stable):
            logging.warning("Stopping after iteration %d of %d: %s.", self.iteration, self.config.iterations, stable)
        return bool(stable)

    def _export_labels(self, scores: uncertainty.UncertaintyStats) -> None:
        """labels.csv of every seed: what the labeling budget bought for each pool sample."""
        for r, seed in enumerate(self.seeds if self.leader else []):
            seed.write_labels(scores.mean_probs[r], scores.entropy[r])


def run(config: ml_collections.ConfigDict, workdir):
    """Runs (or resumes) `config` in `workdir`; see `Driver.run`."""
    return Driver(config, workdir).run()
