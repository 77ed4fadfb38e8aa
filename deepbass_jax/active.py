"""The DeepBASS driver: Algorithm 3.1 (active EM with pseudo-labels), the one stateful shell of the project.

Sets are masks over the fixed pool: `ground_truth[i] >= 0` marks X (labels bought from the oracle),
`pseudo[i] >= 0` marks the pseudo-labeled part of D (eq. 9) with its current pseudo-label (eq. 4).
Every random choice of iteration t comes from fold_in(key, t), so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time
from typing import Optional

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from deepbass_jax import (
    acquisition,
    checkpoint,
    data,
    models,
    oracle as oracle_lib,
    plots,
    progress,
    pseudo_label,
    train,
    uncertainty,
)

CHECKPOINT = "checkpoint.msgpack"
METRICS = "metrics.jsonl"
ORACLE_LOG = "oracle_log.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.json"


def default_config() -> ml_collections.ConfigDict:
    """The paper's MNIST setting (section 5); presets in experiments/configs change what differs."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # every random choice of the run derives from this
    config.data = data.default_config()
    config.model = models.default_config()
    config.train = train.default_config()
    config.initial_per_class = 10  # balanced initial ground truth: labels per class (simulated oracle)
    config.initial_all = False  # label the whole pool at the start (the all-labels baseline)
    config.initial_epochs = 100  # initial fit: epochs over the upsampled ground truth (x20 -> 2,000 views)
    config.initial_patience = 0  # >0: stop the initial fit once training accuracy has not improved this many epochs
    config.iterations = 200  # iterations of Algorithm 3.1
    config.semi_supervised = True  # pseudo-label unlabeled data (lines 4-7)
    config.mode = "all_data"  # "all_data" (theta = 1) or "step_wise" (theta of eq. 8)
    config.active = True  # ask the oracle (lines 8-11)
    config.policy = "max_entropy"  # a name in acquisition.POLICIES
    config.above_average_reference = "mean"  # "mean" (eq. 14) or "theta" (the authors' code)
    config.acquire_every = 10  # k: acquire in iterations 1, 1 + k, 1 + 2k, ...
    config.acquire_count = 10  # n: labels per acquisition
    config.budget = 300  # total ground-truth labels, initial ones included
    config.mc_passes_pool = 10  # T': MC-dropout passes on the pool
    config.mc_passes_labeled = 100  # T: MC-dropout passes on the ground truth, for theta (eq. 8)
    config.chunk_size = 256  # pool inference chunk (memory ~ chunk_size * T'; 256-512 is fastest on CPU)
    config.labeled_chunk_size = 64  # ground-truth inference chunk (memory ~ labeled_chunk_size * T)
    config.pool_size = 0  # use a seeded random subset of this many training samples as the pool (0 = all)
    config.test_size = 0  # evaluate on the first this many test samples (0 = all)
    config.val_size = 0  # samples held out of the pool for validation (0 = the paper's setting)
    config.oracle = "simulated"  # "simulated" (reveals held-back labels) or "file" (a person answers a CSV)
    config.oracle_wait_seconds = 0.0  # FileOracle: how long to wait for answers before stopping the run
    return config


def validate(config: ml_collections.ConfigDict) -> None:
    """Fails early, naming the field, on settings that cannot run."""
    checks = [
        ("mode", config.mode in pseudo_label.MODES, f"one of {pseudo_label.MODES}"),
        ("policy", config.policy in acquisition.POLICIES, f"one of {sorted(acquisition.POLICIES)}"),
        ("above_average_reference", config.above_average_reference in ("mean", "theta"), "'mean' or 'theta'"),
        ("oracle", config.oracle in ("simulated", "file"), "'simulated' or 'file'"),
        ("mc_passes_pool", config.mc_passes_pool >= 1, "at least 1"),
        ("mc_passes_labeled", config.mc_passes_labeled >= 1, "at least 1"),
        ("acquire_every", config.acquire_every >= 1, "at least 1"),
        ("acquire_count", config.acquire_count >= 1, "at least 1"),
        ("budget", config.budget >= 1, "at least 1"),
        ("iterations", config.iterations >= 0, "0 or more"),
        ("initial_per_class", config.initial_per_class >= 1, "at least 1"),
        ("initial_epochs", config.initial_epochs >= 1, "at least 1"),
        ("train.upsample", config.train.upsample >= 1, "at least 1"),
        ("train.pseudo_weight", config.train.pseudo_weight > 0, "positive"),
        ("val_size", config.val_size >= 0, "0 or more"),
        ("pool_size", config.pool_size >= 0, "0 (all) or more"),
        ("test_size", config.test_size >= 0, "0 (all) or more"),
    ]
    for field, ok, expected in checks:
        if not ok:
            value = functools.reduce(getattr, field.split("."), config)
            raise ValueError(f"config.{field}={value!r} is invalid: it must be {expected}.")


@dataclasses.dataclass
class RunState:
    """Everything that changes from one iteration to the next; a checkpoint holds exactly this."""

    iteration: int  # completed iterations (0 = after the initial fit)
    train_state: train.TrainState
    ground_truth: np.ndarray  # [N] int32, label from the oracle or -1
    pseudo: np.ndarray  # [N] int32, current pseudo-label of a sample in D or -1

    @property
    def labeled(self) -> np.ndarray:
        return self.ground_truth >= 0

    @property
    def selected(self) -> np.ndarray:
        return self.pseudo >= 0

    def targets(self) -> np.ndarray:
        """Training labels [N]: ground truth where known, else the pseudo-label (-1 outside D)."""
        return np.where(self.labeled, self.ground_truth, self.pseudo).astype(np.int32)


class RunFinished(Exception):
    """The workdir holds a finished run; it is not run again."""


class Driver:
    """Runs Algorithm 3.1 in `workdir`, resuming from its checkpoint when there is one."""

    def __init__(self, config: ml_collections.ConfigDict, workdir, dataset: Optional[data.Dataset] = None):
        """`dataset` replaces `data.load(config.data)`, e.g. for data already in memory."""
        validate(config)
        self.config = config
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._check_config_file()
        if (self.workdir / SUMMARY).exists():
            raise RunFinished(
                f"{self.workdir} holds a finished run ({self.workdir / SUMMARY}); choose another --workdir "
                "to run again."
            )
        self.key = jax.random.key(config.seed)
        dataset = data.load(config.data) if dataset is None else dataset
        if dataset.train_labels is None and config.oracle == "simulated":
            raise ValueError(f"data {config.data.name!r} has no labels: use config.oracle='file'.")
        self.dataset, self.val_indices, self.pool_indices = self._split(dataset)
        self.pool_images = jnp.asarray(dataset.train_images[self.pool_indices])
        self.hidden_labels = (  # for metrics only; the driver learns labels through the oracle
            None if dataset.train_labels is None else dataset.train_labels[self.pool_indices]
        )
        self.num_classes = dataset.num_classes
        self.module = models.build(config.model, self.num_classes)
        self.apply_fn = models.make_apply(self.module)
        self.oracle = self._make_oracle()
        budget_limit = self.pool_images.shape[0]
        if config.active and config.budget > budget_limit:
            raise ValueError(f"config.budget={config.budget} exceeds the pool of {budget_limit} samples.")

    # ----------------------------------------------------------------------------------------- set-up
    def _check_config_file(self) -> None:
        path = self.workdir / CONFIG
        current = json.loads(self.config.to_json_best_effort(sort_keys=True))
        if path.exists():
            saved = json.loads(path.read_text())
            if saved != current:
                changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
                raise ValueError(
                    f"{path} was written with a different config (fields {changed} differ); resume with the "
                    "same config or choose another --workdir."
                )
        else:
            checkpoint.write_json(path, current)

    def _split(self, dataset: data.Dataset):
        """Seeded: validation indices, then pool indices (all the rest, or `pool_size` of them)."""
        config = self.config
        num_train = dataset.train_images.shape[0]
        wanted = config.val_size + (config.pool_size or num_train - config.val_size)
        if wanted > num_train:
            raise ValueError(
                f"config.val_size={config.val_size} + config.pool_size={config.pool_size} exceed the "
                f"{num_train} training samples of {config.data.name!r}."
            )
        order = np.random.default_rng(config.seed).permutation(num_train)
        val_indices = np.sort(order[: config.val_size])
        pool_indices = np.sort(order[config.val_size : wanted])
        if config.test_size and dataset.test_images is not None:
            dataset = dataclasses.replace(
                dataset,
                test_images=dataset.test_images[: config.test_size],
                test_labels=None if dataset.test_labels is None else dataset.test_labels[: config.test_size],
            )
        return dataset, val_indices, pool_indices

    def _make_oracle(self) -> oracle_lib.Oracle:
        if self.config.oracle == "simulated":
            return oracle_lib.SimulatedOracle(self.hidden_labels)
        return oracle_lib.FileOracle(
            self.workdir / "oracle", self.num_classes, wait_seconds=self.config.oracle_wait_seconds
        )

    def _setup_keys(self):
        """Keys of iteration 0: parameter init, the training dropout stream, the initial fit's plans."""
        return jax.random.split(jax.random.fold_in(self.key, 0), 3)

    def _fresh_train_state(self) -> train.TrainState:
        init_key, dropout_key, _ = self._setup_keys()
        params = models.init_params(self.module, init_key, self.dataset.input_shape)
        return train.create_train_state(self.apply_fn, params, dropout_key, self.config.train)

    # ------------------------------------------------------------------------------------ the oracle
    def _buy(self, state: RunState, indices: np.ndarray, iteration: int) -> int:
        """Lines 9-11: ground truth for `indices`, logged before use; labels bought for this iteration by an
        interrupted earlier attempt are reused, never asked again."""
        logged = [e for e in checkpoint.read_jsonl(self.workdir / ORACLE_LOG) if e["iteration"] == iteration]
        if logged:
            indices = np.array([e["index"] for e in logged], np.int64)
            labels = np.array([e["label"] for e in logged], np.int32)
        else:
            labels = self.oracle.label(indices, np.asarray(self.pool_images[indices]))
            checkpoint.append_jsonl(
                self.workdir / ORACLE_LOG,
                [{"iteration": iteration, "index": int(i), "label": int(g)} for i, g in zip(indices, labels)],
            )
        state.ground_truth[indices] = labels
        state.pseudo[indices] = -1
        return len(indices)

    def _initial_indices(self) -> np.ndarray:
        if self.config.initial_all:
            return np.arange(self.pool_images.shape[0])
        if self.hidden_labels is not None and self.config.oracle == "simulated":
            # The paper's balanced initial set: choosing it uses the labels, as the paper's setup does.
            return data.balanced_initial_labels(self.hidden_labels, self.config.initial_per_class, self.config.seed)
        count = self.config.initial_per_class * self.num_classes
        return np.sort(np.random.default_rng(self.config.seed).choice(self.pool_images.shape[0], count, False))

    # ------------------------------------------------------------------------------ checkpointing
    def _save(self, state: RunState) -> None:
        train_state = state.train_state.replace(dropout_key=jax.random.key_data(state.train_state.dropout_key))
        checkpoint.save(
            self.workdir / CHECKPOINT,
            {
                "iteration": state.iteration,
                "train_state": jax.device_get(flax.serialization.to_state_dict(train_state)),
                "ground_truth": state.ground_truth,
                "pseudo": state.pseudo,
                "oracle": self.oracle.state_dict(),
            },
        )

    def _restore(self) -> Optional[RunState]:
        path = self.workdir / CHECKPOINT
        if not path.exists():
            return None
        saved = checkpoint.load(path)
        template = self._fresh_train_state()
        template = template.replace(dropout_key=jax.random.key_data(template.dropout_key))
        restored = flax.serialization.from_state_dict(template, saved["train_state"])
        restored = restored.replace(dropout_key=jax.random.wrap_key_data(restored.dropout_key))
        self.oracle.load_state_dict(saved["oracle"])
        state = RunState(
            iteration=int(saved["iteration"]),
            train_state=jax.device_put(restored),
            ground_truth=np.array(saved["ground_truth"], np.int32),
            pseudo=np.array(saved["pseudo"], np.int32),
        )
        # Lines written after the checkpoint belong to iterations that will run again.
        metrics = [m for m in checkpoint.read_jsonl(self.workdir / METRICS) if m["iteration"] <= state.iteration]
        checkpoint.rewrite_jsonl(self.workdir / METRICS, metrics)
        logging.info("Resuming %s after iteration %d.", self.workdir, state.iteration)
        return state

    # --------------------------------------------------------------------------------- the algorithm
    def initial_state(self) -> RunState:
        """Lines 1-2: buy the initial ground truth, then fit on it alone (upsampled)."""
        num_pool = self.pool_images.shape[0]
        state = RunState(0, self._fresh_train_state(), np.full(num_pool, -1, np.int32), np.full(num_pool, -1, np.int32))
        self._buy(state, self._initial_indices(), iteration=0)
        config = self.config
        _, _, fit_key = self._setup_keys()
        with progress.Progress(config.initial_epochs, "initial fit") as bar:
            state.train_state, metrics = train.fit(
                state.train_state, self.pool_images, jnp.asarray(state.targets()), state.labeled, fit_key,
                config.initial_epochs, config.train, config.initial_patience, lambda *_: bar.update(1),
            )
        logging.info("Initial fit: %d steps, training accuracy %.4f.", int(state.train_state.step), metrics.accuracy)
        return state

    def iterate(self, state: RunState) -> dict:
        """One iteration of Algorithm 3.1 (lines 4-12); returns its metrics line."""
        config = self.config
        started = time.perf_counter()
        iteration = state.iteration + 1
        pool_key, labeled_key, acquire_key, plan_key = jax.random.split(jax.random.fold_in(self.key, iteration), 4)
        params = state.train_state.params

        # Line 5 and eq. 8: MC-dropout inference on the pool (T') and on the ground truth (T).
        stats = uncertainty.pool_stats(
            self.apply_fn, params, self.pool_images, pool_key, config.mc_passes_pool, config.chunk_size
        )
        labeled_stats = uncertainty.pool_stats(
            self.apply_fn, params, self.pool_images[np.flatnonzero(state.labeled)], labeled_key,
            config.mc_passes_labeled, config.labeled_chunk_size,
        )
        theta = pseudo_label.threshold(labeled_stats.entropy)

        # Lines 8-11: every k-th iteration, starting with the first, buy labels for uncertain samples.
        bought = 0
        room = config.budget - int(state.labeled.sum())
        if config.active and (iteration - 1) % config.acquire_every == 0 and room > 0:
            policy = acquisition.get(config.policy)
            scores = getattr(stats, policy.score)
            count = min(config.acquire_count, room)
            kwargs = {"reference": theta} if (
                config.policy == "above_average" and config.above_average_reference == "theta") else {}
            chosen = policy.select(scores, jnp.asarray(~state.labeled), acquire_key, count, **kwargs)
            bought = self._buy(state, acquisition.valid_indices(chosen), iteration)

        # Lines 6-7, eqs. 4 and 9: refresh every pseudo-label in D, then grow D (step-wise) or take all.
        if config.semi_supervised:
            selected = np.asarray(pseudo_label.select(
                stats.entropy, theta, jnp.asarray(state.labeled), jnp.asarray(state.selected), config.mode
            ))
            state.pseudo = np.where(selected, np.asarray(pseudo_label.pseudo_labels(stats.mean_probs)), -1)
            state.pseudo = state.pseudo.astype(np.int32)

        # Line 12: one epoch on D = ground truth x upsample + pseudo-labeled samples.
        indices, weights = train.sampling_plan(
            state.labeled, state.selected, plan_key, config.train.upsample, config.train.pseudo_weight
        )
        state.train_state, epoch = train.train_epoch(
            state.train_state, self.pool_images, jnp.asarray(state.targets()), indices, weights,
            config.train.batch_size,
        )
        state.iteration = iteration
        return self._metrics(state, stats, theta, bought, epoch, time.perf_counter() - started)

    def _metrics(self, state: RunState, stats, theta, bought: int, epoch, seconds: float) -> dict:
        """Monitoring only: nothing the driver decides depends on these numbers."""
        params = state.train_state.params
        labeled, selected = state.labeled, state.selected
        line = {
            "iteration": state.iteration,
            "labels": int(labeled.sum()),
            "bought": bought,
            "pseudo_labeled": int(selected.sum()),
            "d_size": int(labeled.sum()) * self.config.train.upsample + int(selected.sum()),
            "theta": float(theta),
            "mean_pool_entropy": float(np.asarray(stats.entropy)[~labeled].mean()) if (~labeled).any() else 0.0,
            "train_loss": epoch.loss,
            "ground_truth_accuracy": train.accuracy(
                self.apply_fn, params, self.pool_images[np.flatnonzero(labeled)], state.ground_truth[labeled]
            ),
            "pseudo_label_coverage": float(selected.sum() / max((~labeled).sum(), 1)),
            "pseudo_label_accuracy": None,
            "seconds": seconds,
        }
        if self.hidden_labels is not None and selected.any():
            line["pseudo_label_accuracy"] = float(np.mean(state.pseudo[selected] == self.hidden_labels[selected]))
        line.update(self._held_out_accuracy(params))
        return line

    def _held_out_accuracy(self, params) -> dict:
        result = {}
        if self.dataset.test_images is not None and self.dataset.test_labels is not None:
            result["test_accuracy"] = train.accuracy(
                self.apply_fn, params, self.dataset.test_images, self.dataset.test_labels
            )
        if len(self.val_indices):
            result["val_accuracy"] = train.accuracy(
                self.apply_fn, params, self.dataset.train_images[self.val_indices],
                self.dataset.train_labels[self.val_indices],
            )
        return result

    # ------------------------------------------------------------------------------------------ run
    def run(self) -> dict:
        """Runs to the last iteration; the final state stays available as `self.state`."""
        state = self.state = self._restore()
        if state is None:
            state = self.state = self.initial_state()
            initial = {"iteration": 0, "labels": int(state.labeled.sum()), "bought": int(state.labeled.sum())}
            initial.update(self._held_out_accuracy(state.train_state.params))
            checkpoint.rewrite_jsonl(self.workdir / METRICS, [initial])
            self._save(state)
            logging.info("Initial model: %s", initial)
        with progress.Progress(self.config.iterations, "iterations", initial=state.iteration) as bar:
            while state.iteration < self.config.iterations:
                line = self.iterate(state)
                checkpoint.append_jsonl(self.workdir / METRICS, [line])
                self._save(state)
                bar.update(1)
                logging.log_every_n_seconds(logging.INFO, "iteration %d: %s", 30, line["iteration"], line)
        return self._finish(state)

    def _finish(self, state: RunState) -> dict:
        metrics = checkpoint.read_jsonl(self.workdir / METRICS)
        final = metrics[-1]
        summary = {
            "iterations": state.iteration,
            "labels": int(state.labeled.sum()),
            "final": final,
            "test_accuracy": final.get("test_accuracy"),
            "oracle_queries": len(checkpoint.read_jsonl(self.workdir / ORACLE_LOG)),
        }
        plots.curves(metrics, self.workdir / "curves.png")
        if self.pool_images.ndim == 2 and self.pool_images.shape[1] == 2:
            plots.decision_boundary(
                self.apply_fn, state.train_state.params, np.asarray(self.pool_images), state.labeled,
                self.hidden_labels, self.workdir / "decision_boundary.png",
            )
        checkpoint.write_json(self.workdir / SUMMARY, summary)
        logging.info("Finished %s: %s", self.workdir, summary)
        return summary


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    """Runs (or resumes) the experiment of `config` in `workdir`; returns the summary."""
    return Driver(config, workdir).run()
