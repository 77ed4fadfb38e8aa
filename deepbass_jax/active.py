"""The DeepBASS driver: Algorithm 3.1 (active EM with pseudo-labels), the one stateful shell of the project.

Sets are masks over the fixed pool: `ground_truth[i] >= 0` marks X (labels bought from the oracle),
`pseudo[i] >= 0` marks the pseudo-labeled part of D (eq. 9) with its current pseudo-label (eq. 4).
Every random choice of iteration t comes from fold_in(key, t), so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import contextlib
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
    chunks,
    data,
    layers,
    models,
    oracle as oracle_lib,
    plots,
    progress,
    pseudo_label,
    rundir,
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
    config.theta = -1.0  # -1: computed by eq. 8 (step-wise) / 1 in all-data mode; else a fixed threshold in [0, 1]
    config.chunk_size = 256  # pool inference chunk (memory ~ chunk_size * T'; 256-512 is fastest on CPU)
    config.labeled_chunk_size = 64  # ground-truth inference chunk (memory ~ labeled_chunk_size * T)
    config.pool_devices = 1  # local devices pool inference is sharded across (0 = all); chunks are per device
    config.pool_size = 0  # use a seeded random subset of this many training samples as the pool (0 = all)
    config.test_size = 0  # evaluate on the first this many test samples (0 = all)
    config.val_size = 0  # samples held out of the pool for validation (0 = the paper's setting)
    config.oracle = "simulated"  # "simulated" (reveals held-back labels) or "file" (a person answers a CSV)
    config.oracle_wait_seconds = 0.0  # FileOracle: how long to wait for answers before stopping the run
    return config


class ConfigError(ValueError):
    """A config setting that cannot run; the message names the field, the problem and the remedy."""


# What a field means, for error messages (the paper's symbols where it has them).
_MEANINGS = {
    "mc_passes_pool": "T', the MC-dropout passes on the pool",
    "mc_passes_labeled": "T, the MC-dropout passes on the ground truth for theta (eq. 8)",
    "acquire_every": "k: acquire every k-th iteration",
    "acquire_count": "n: labels bought per acquisition",
    "budget": "total ground-truth labels, initial ones included",
    "theta": "the pseudo-label entropy threshold; -1 computes it by eq. 8",
    "model.dropout_rate": "the dropout rate of training and of MC dropout",
    "train.augment_degrees": "the maximum rotation of ground-truth augmentation in degrees; 0 is off",
    "train.augment_scale": "the maximum relative height/width scaling of ground-truth augmentation; 0 is off",
}
_EXTRA_FIELDS = ("preset",)  # top-level fields a config file may add to default_config()


def _unknown_fields(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict, prefix: str = ""):
    """(dotted name, the fields there are) of each field of `config` that `reference` (default_config()) lacks."""
    unknown = []
    for name in config.keys():
        if name not in reference:
            if not (prefix == "" and name in _EXTRA_FIELDS):
                unknown.append((prefix + name, sorted(reference.keys())))
        elif isinstance(config[name], ml_collections.ConfigDict) and isinstance(reference[name],
                                                                               ml_collections.ConfigDict):
            unknown += _unknown_fields(config[name], reference[name], f"{prefix}{name}.")
    return unknown


def validate(config: ml_collections.ConfigDict) -> None:
    """Fails early, naming the field, on settings that cannot run (before any data is loaded)."""
    for field, known in _unknown_fields(config, default_config()):
        parent, _, name = field.rpartition(".")
        raise ConfigError(
            f"config.{field}: unknown config field {name!r} (a typo?); the fields of "
            f"config{'.' + parent if parent else ''} are {', '.join(known)}."
        )
    checks = [
        ("mode", config.mode in pseudo_label.MODES, f"one of {pseudo_label.MODES}"),
        ("policy", config.policy in acquisition.POLICIES, f"one of {sorted(acquisition.POLICIES)}"),
        ("above_average_reference", config.above_average_reference in ("mean", "theta"), "'mean' or 'theta'"),
        ("oracle", config.oracle in ("simulated", "file"), "'simulated' or 'file'"),
        ("mc_passes_pool", config.mc_passes_pool >= 1, "at least 1"),
        ("mc_passes_labeled", config.mc_passes_labeled >= 1, "at least 1"),
        ("theta", config.theta == -1 or 0 <= config.theta <= 1, "-1 (computed) or a fixed threshold in [0, 1]"),
        ("acquire_every", config.acquire_every >= 1, "at least 1"),
        ("acquire_count", config.acquire_count >= 1, "at least 1"),
        ("budget", config.budget >= 1, "at least 1"),
        ("iterations", config.iterations >= 0, "0 or more"),
        ("initial_per_class", config.initial_per_class >= 1, "at least 1"),
        ("initial_epochs", config.initial_epochs >= 1, "at least 1"),
        ("model.architecture", config.model.architecture in models.ARCHITECTURES,
         f"one of {sorted(models.ARCHITECTURES)}"),
        ("model.dropout_rate", 0 < config.model.dropout_rate < 1, "strictly between 0 and 1"),
        ("model.dropout_masks", config.model.dropout_masks in models.DROPOUT_MASKS,
         f"one of {sorted(models.DROPOUT_MASKS)}"),
        ("model.kernels", config.model.kernels in layers.KERNELS, f"one of {layers.KERNELS}"),
        ("train.upsample", config.train.upsample >= 1, "at least 1"),
        ("train.pseudo_weight", config.train.pseudo_weight > 0, "positive"),
        ("train.augment_degrees", 0 <= config.train.augment_degrees < 180, "in [0, 180) (the paper: below 10)"),
        ("train.augment_scale", 0 <= config.train.augment_scale < 1, "in [0, 1) (the paper: 0.05)"),
        ("val_size", config.val_size >= 0, "0 or more"),
        ("pool_size", config.pool_size >= 0, "0 (all) or more"),
        ("test_size", config.test_size >= 0, "0 (all) or more"),
        ("pool_devices", config.pool_devices >= 0, "0 (all local devices) or more"),
    ]
    for field, ok, expected in checks:
        if not ok:
            value = functools.reduce(getattr, field.split("."), config)
            meaning = f" ({_MEANINGS[field]})" if field in _MEANINGS else ""
            raise ConfigError(
                f"config.{field}={value!r} is invalid{meaning}: it must be {expected}; set --config.{field} "
                "to such a value."
            )


# ------------------------------------------------------------------------------------------------
# Pure pieces of the algorithm, shared by `Driver` and `multi_seed` (many seeds under one vmap).


def split_pool(config: ml_collections.ConfigDict, dataset: data.Dataset):
    """Seeded by config.seed: (dataset with the test set cut to `test_size`, validation indices, pool indices).

    The validation indices come first in one permutation, then the pool (all the rest, or `pool_size`).
    """
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


def setup_keys(key: jax.Array):
    """Keys of iteration 0 of the run `key`: parameter init, the training dropout stream, the initial fit's plans."""
    return jax.random.split(jax.random.fold_in(key, 0), 3)


def iteration_keys(key: jax.Array, iteration: int):
    """Keys of iteration t >= 1: pool inference, ground-truth inference (theta), acquisition, training plan."""
    return jax.random.split(jax.random.fold_in(key, iteration), 4)


def initial_train_state(module, apply_fn, key: jax.Array, input_shape, train_config) -> train.TrainState:
    """The untrained network of the run `key` with its optimizer state."""
    init_key, dropout_key, _ = setup_keys(key)
    params = models.init_params(module, init_key, input_shape)
    return train.create_train_state(apply_fn, params, dropout_key, train_config)


def initial_indices(config: ml_collections.ConfigDict, hidden_labels: Optional[np.ndarray], num_pool: int,
                    num_classes: int) -> np.ndarray:
    """Line 1: the pool indices of the initial ground truth (seeded by config.seed)."""
    if config.initial_all:
        return np.arange(num_pool)
    count = config.initial_per_class * num_classes
    if count > num_pool:
        raise ConfigError(
            f"config.initial_per_class={config.initial_per_class} asks for {count} initial labels ({num_classes} "
            f"classes), more than the pool of {num_pool} samples holds; lower config.initial_per_class to at most "
            f"{num_pool // num_classes}, or use a larger pool (config.pool_size, 0 = all)."
        )
    if hidden_labels is not None and config.oracle == "simulated":
        # The paper's balanced initial set: choosing it uses the labels, as the paper's setup does.
        return data.balanced_initial_labels(hidden_labels, config.initial_per_class, config.seed, num_classes)
    return np.sort(np.random.default_rng(config.seed).choice(num_pool, count, False))


def acquisition_count(config: ml_collections.ConfigDict, iteration: int, num_labeled: int) -> int:
    """Lines 8-11: how many labels iteration t buys; every k-th iteration from the first, within the budget."""
    room = config.budget - num_labeled
    if config.active and (iteration - 1) % config.acquire_every == 0 and room > 0:
        return min(config.acquire_count, room)
    return 0


def threshold(config: ml_collections.ConfigDict, labeled_entropy) -> jax.Array:
    """Theta: eq. 8 over the ground truth's entropy [|X|], or the fixed config.theta when that is in [0, 1]."""
    if config.theta >= 0:
        return jnp.float32(config.theta)
    return pseudo_label.threshold(labeled_entropy)


def query_indices(stats: uncertainty.UncertaintyStats, theta: jax.Array, labeled: jax.Array, key: jax.Array,
                  count: int, policy: str, reference: str = "mean") -> jax.Array:
    """Line 8: `count` unlabeled pool indices [count] chosen by `policy`, -1-padded (pure, jit/vmap-able).

    labeled [N] bool; `reference` is config.above_average_reference ("theta": compare with theta, not eq. 14).
    """
    selector = acquisition.get(policy)
    kwargs = {"reference": theta} if (policy == "above_average" and reference == "theta") else {}
    return selector.select(getattr(stats, selector.score), ~labeled, key, count, **kwargs)


def refresh_pseudo_labels(stats: uncertainty.UncertaintyStats, theta: jax.Array, labeled: jax.Array,
                          selected: jax.Array, mode: str) -> jax.Array:
    """Lines 6-7, eqs. 4 and 9: the pseudo-label [N] int32 of every sample in the new D, -1 outside it."""
    in_d = pseudo_label.select(stats.entropy, theta, labeled, selected, mode)
    return jnp.where(in_d, pseudo_label.pseudo_labels(stats.mean_probs), -1).astype(jnp.int32)


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


def metrics_line(config: ml_collections.ConfigDict, apply_fn, pool_images, hidden_labels: Optional[np.ndarray],
                 state: RunState, entropy, theta, bought: int, train_loss: float, seconds: float) -> dict:
    """The metrics line of a finished iteration (held-out accuracy aside); monitoring only.

    entropy [N]: the pool entropy the iteration decided with; hidden_labels [N] or None.
    """
    params = state.train_state.params
    labeled, selected = state.labeled, state.selected
    line = {
        "iteration": state.iteration,
        "labels": int(labeled.sum()),
        "bought": bought,
        "pseudo_labeled": int(selected.sum()),
        "d_size": int(labeled.sum()) * config.train.upsample + int(selected.sum()),
        "theta": float(theta),
        "mean_pool_entropy": float(np.asarray(entropy)[~labeled].mean()) if (~labeled).any() else 0.0,
        "train_loss": train_loss,
        "ground_truth_accuracy": train.accuracy(
            apply_fn, params, pool_images[np.flatnonzero(labeled)], state.ground_truth[labeled]
        ),
        "pseudo_label_coverage": float(selected.sum() / max((~labeled).sum(), 1)),
        "pseudo_label_accuracy": None,
        "seconds": seconds,
    }
    if hidden_labels is not None and selected.any():
        line["pseudo_label_accuracy"] = float(np.mean(state.pseudo[selected] == hidden_labels[selected]))
    return line


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _checked_predict_chunk(apply_fn, params, images: jax.Array):
    """Deterministic predictions [B] of a chunk [B, ...] and whether each row's logits are finite [B]."""
    logits = apply_fn(params, images)
    return logits.argmax(axis=-1), jnp.isfinite(logits).all(axis=-1)


def checked_accuracy(apply_fn, params, images, labels, what: str, chunk_size: int = 2048) -> float:
    """`train.accuracy` that raises FloatingPointError when the logits of a prediction hold NaN or Inf."""
    predictions, finite = [], []
    for _, chunk, valid in chunks.padded_chunks(images, chunk_size):
        chunk_predictions, chunk_finite = _checked_predict_chunk(apply_fn, params, chunk)
        predictions.append(chunk_predictions[:valid])
        finite.append(chunk_finite[:valid])
    finite = np.asarray(jnp.concatenate(finite))
    if not finite.all():
        raise FloatingPointError(
            f"NaN or Inf in the {what} predictions ({int((~finite).sum())} of {len(finite)} samples)"
        )
    return float(np.mean(np.asarray(jnp.concatenate(predictions)) == np.asarray(labels)))


def held_out_accuracy(apply_fn, params, dataset: data.Dataset, val_indices: np.ndarray) -> dict:
    """Test accuracy (and validation accuracy when samples were held out of the pool); FloatingPointError when
    a prediction is NaN or Inf."""
    result = {}
    if dataset.test_images is not None and dataset.test_labels is not None:
        result["test_accuracy"] = checked_accuracy(apply_fn, params, dataset.test_images, dataset.test_labels, "test")
    if len(val_indices):
        result["val_accuracy"] = checked_accuracy(
            apply_fn, params, dataset.train_images[val_indices], dataset.train_labels[val_indices], "validation"
        )
    return result


class RunFinished(Exception):
    """The workdir holds a finished run; it is not run again."""


class Driver:
    """Runs Algorithm 3.1 in `workdir`, resuming from its checkpoint when there is one."""

    def __init__(self, config: ml_collections.ConfigDict, workdir, dataset: Optional[data.Dataset] = None):
        """`dataset` replaces `data.load(config.data)`, e.g. for data already in memory."""
        validate(config)
        self.config = config
        self.workdir = pathlib.Path(workdir)
        rundir.check_writable(self.workdir)  # before any work: a read-only or full disk fails now, not hours later
        self._lock = rundir.Lock(self.workdir)  # one process per workdir; released by run() or on failure here
        try:
            self._set_up(dataset)
        except BaseException:
            self._lock.release()
            raise

    def _set_up(self, dataset: Optional[data.Dataset]) -> None:
        """Everything __init__ does while holding the workdir lock."""
        config = self.config
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
        self.dataset, self.val_indices, self.pool_indices = split_pool(self.config, dataset)
        self.pool_images = jnp.asarray(dataset.train_images[self.pool_indices])
        self.hidden_labels = (  # for metrics only; the driver learns labels through the oracle
            None if dataset.train_labels is None else dataset.train_labels[self.pool_indices]
        )
        self.num_classes = dataset.num_classes
        self.module = models.build(config.model, self.num_classes)
        self.apply_fn = models.make_apply(self.module)
        self.oracle = self._make_oracle()
        self.mesh = uncertainty.pool_mesh(config.pool_devices)
        if (config.train.augment_degrees or config.train.augment_scale) and self.pool_images.ndim != 4:
            raise ConfigError(
                f"config.train.augment_degrees={config.train.augment_degrees} / augment_scale="
                f"{config.train.augment_scale} warp images [N, H, W, C], but {config.data.name!r} has samples of "
                f"shape {tuple(self.pool_images.shape[1:])}; set both to 0."
            )
        budget_limit = self.pool_images.shape[0]
        if config.active and config.budget > budget_limit:
            raise ConfigError(
                f"config.budget={config.budget} exceeds the pool of {budget_limit} samples: the oracle cannot "
                f"label more than the pool holds; lower config.budget to at most {budget_limit}, or use a larger "
                "pool (config.pool_size, 0 = all)."
            )
        self._initial_indices()  # checks initial_per_class against the pool and its rarest class
        self._write_config_file()  # only now: a config refused above must not be pinned to the workdir

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

    def _write_config_file(self) -> None:
        path = self.workdir / CONFIG
        if not path.exists():
            checkpoint.write_json(path, json.loads(self.config.to_json_best_effort(sort_keys=True)))

    def _make_oracle(self) -> oracle_lib.Oracle:
        if self.config.oracle == "simulated":
            return oracle_lib.SimulatedOracle(self.hidden_labels)
        return oracle_lib.FileOracle(
            self.workdir / "oracle", self.num_classes, wait_seconds=self.config.oracle_wait_seconds
        )

    def _fresh_train_state(self) -> train.TrainState:
        return initial_train_state(self.module, self.apply_fn, self.key, self.dataset.input_shape, self.config.train)

    # ------------------------------------------------------------------------------------ the oracle
    def _buy(self, state: RunState, indices: np.ndarray, iteration: int) -> int:
        """Lines 9-11: ground truth for `indices`, logged (fsynced) before use.

        Labels an interrupted earlier attempt logged for this iteration are reused, never asked again; the oracle
        replays them, so its state is that of an uninterrupted run. Only samples without a complete log line are
        asked: a line torn by a kill (cut off on resume) was not durably logged, so that label is asked again,
        as is an answer that arrived but was killed before its line was written (it cannot be logged earlier).
        """
        logged = {e["index"]: e["label"] for e in checkpoint.read_jsonl(self.workdir / ORACLE_LOG)
                  if e["iteration"] == iteration}
        reused = np.array(list(logged), np.int64)
        labels = np.array(list(logged.values()), np.int32)
        if len(reused):
            self.oracle.replay(reused, labels)
        unlogged = [i for i in np.asarray(indices).tolist() if i not in logged]
        ask = np.array(unlogged[: max(len(indices) - len(logged), 0)], np.int64)
        if len(ask):
            answers = np.asarray(self.oracle.label(ask, np.asarray(self.pool_images[ask])), np.int32)
            rundir.fault_point("after_oracle")
            checkpoint.append_jsonl(
                self.workdir / ORACLE_LOG,
                [{"iteration": iteration, "index": int(i), "label": int(g)} for i, g in zip(ask, answers)],
            )
            rundir.fault_point("after_oracle_log")
        bought = np.concatenate([reused, ask])
        labels = np.concatenate([labels, answers]) if len(ask) else labels
        state.ground_truth[bought] = labels
        state.pseudo[bought] = -1
        return len(bought)

    def _initial_indices(self) -> np.ndarray:
        return initial_indices(self.config, self.hidden_labels, self.pool_images.shape[0], self.num_classes)

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
        """The state of the newest good checkpoint (None: a fresh run), after tidying what a kill leaves behind:
        temp files, a torn last line of the logs, metrics of iterations that run again, a bad newest checkpoint."""
        for stale in checkpoint.remove_temporaries(self.workdir):
            logging.info("Removed %s, left by an interrupted write.", stale)
        for name in (METRICS, ORACLE_LOG):
            checkpoint.repair_jsonl(self.workdir / name)
        path = self.workdir / CHECKPOINT
        newest = checkpoint.load_newest(path)  # raises, naming both files, when neither is usable
        if newest is None:
            return None
        saved = newest.state
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
        if newest.problems:
            kept = f"; it was moved to {checkpoint.set_aside(path)}" if path.exists() else ""
            logging.warning(
                "The newest checkpoint is unusable (%s)%s. Resuming from the previous checkpoint %s after iteration "
                "%d: later iterations run again, reusing the labels in %s instead of asking the oracle again.",
                "; ".join(newest.problems), kept, newest.path, state.iteration, self.workdir / ORACLE_LOG,
            )
        logging.info("Resuming %s after iteration %d.", self.workdir, state.iteration)
        return state

    # --------------------------------------------------------------------------------- the algorithm
    def initial_state(self) -> RunState:
        """Lines 1-2: buy the initial ground truth, then fit on it alone (upsampled)."""
        num_pool = self.pool_images.shape[0]
        state = RunState(0, self._fresh_train_state(), np.full(num_pool, -1, np.int32), np.full(num_pool, -1, np.int32))
        self._buy(state, self._initial_indices(), iteration=0)
        config = self.config
        _, _, fit_key = setup_keys(self.key)

        def epoch_done(*_):
            bar.update(1)
            rundir.fault_point("initial_fit_epoch")  # where tests/fault_test.py kills a run during the fit

        with progress.Progress(config.initial_epochs, "initial fit") as bar, self._stop_on_nan(0):
            state.train_state, metrics = train.fit(
                state.train_state, self.pool_images, jnp.asarray(state.targets()), state.labeled, fit_key,
                config.initial_epochs, config.train, config.initial_patience, epoch_done,
            )  # augments every plan entry (config.train.augment_*): all are ground truth
        self._require_finite(0, "the network's parameters after the initial fit", state.train_state.params)
        logging.info("Initial fit: %d steps, training accuracy %.4f.", int(state.train_state.step), metrics.accuracy)
        return state

    def iterate(self, state: RunState) -> dict:
        """One iteration of Algorithm 3.1 (lines 4-12); returns its metrics line."""
        config = self.config
        started = time.perf_counter()
        iteration = state.iteration + 1
        pool_key, labeled_key, acquire_key, plan_key = iteration_keys(self.key, iteration)
        params = state.train_state.params

        # Line 5 and eq. 8: MC-dropout inference on the pool (T') and on the ground truth (T).
        stats = uncertainty.pool_stats(
            self.apply_fn, params, self.pool_images, pool_key, config.mc_passes_pool, config.chunk_size, self.mesh
        )
        labeled_stats = uncertainty.pool_stats(
            self.apply_fn, params, self.pool_images[np.flatnonzero(state.labeled)], labeled_key,
            config.mc_passes_labeled, config.labeled_chunk_size, self.mesh,
        )
        theta = threshold(config, labeled_stats.entropy)
        self._require_finite(iteration, "the pool's MC-dropout mean probabilities", stats.mean_probs)
        self._require_finite(iteration, "theta (eq. 8: the ground truth's mean MC-dropout entropy)", theta)

        # Lines 8-11: every k-th iteration, starting with the first, buy labels for uncertain samples.
        bought = 0
        count = acquisition_count(config, iteration, int(state.labeled.sum()))
        if count:
            chosen = query_indices(stats, theta, jnp.asarray(state.labeled), acquire_key, count, config.policy,
                                   config.above_average_reference)
            bought = self._buy(state, acquisition.valid_indices(chosen), iteration)

        # Lines 6-7, eqs. 4 and 9: refresh every pseudo-label in D, then grow D (step-wise) or take all.
        if config.semi_supervised:
            state.pseudo = np.array(refresh_pseudo_labels(
                stats, theta, jnp.asarray(state.labeled), jnp.asarray(state.selected), config.mode
            ), np.int32)

        # Line 12: one epoch on D = ground truth x upsample + pseudo-labeled samples.
        indices, weights = train.sampling_plan(
            state.labeled, state.selected, plan_key, config.train.upsample, config.train.pseudo_weight
        )
        with self._stop_on_nan(iteration):
            state.train_state, epoch = train.train_epoch(
                state.train_state, self.pool_images, jnp.asarray(state.targets()), indices, weights,
                config.train.batch_size, state.labeled, config.train.augment_degrees, config.train.augment_scale,
            )  # augments the ground-truth entries only
        self._require_finite(iteration, "the training loss", epoch.loss)
        self._require_finite(iteration, "the network's parameters after training", state.train_state.params)
        state.iteration = iteration
        return self._metrics(state, stats, theta, bought, epoch, time.perf_counter() - started)

    def _metrics(self, state: RunState, stats, theta, bought: int, epoch, seconds: float) -> dict:
        """Monitoring only: nothing the driver decides depends on these numbers."""
        line = metrics_line(self.config, self.apply_fn, self.pool_images, self.hidden_labels, state, stats.entropy,
                            theta, bought, epoch.loss, seconds)
        line.update(self._held_out_accuracy(state.train_state.params, state.iteration))
        return line

    def _held_out_accuracy(self, params, iteration: int = 0) -> dict:
        with self._stop_on_nan(iteration):
            return held_out_accuracy(self.apply_fn, params, self.dataset, self.val_indices)

    # ------------------------------------------------------------------------------- NaN / Inf guard
    @contextlib.contextmanager
    def _stop_on_nan(self, iteration: int):
        """Turns a FloatingPointError inside into one naming `iteration` (0: the initial fit) and what is kept."""
        try:
            yield
        except FloatingPointError as error:
            raise self._nan_error(iteration, str(error).rstrip(".")) from error

    def _require_finite(self, iteration: int, what: str, values) -> None:
        """Stops the run when `values` (an array, a scalar or a pytree of arrays) hold NaN or Inf."""
        if not all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree_util.tree_leaves(values)):
            raise self._nan_error(iteration, f"NaN or Inf in {what}")

    def _nan_error(self, iteration: int, problem: str) -> FloatingPointError:
        """The error that stops the run in `iteration`; nothing of that iteration is saved (the caller, `run`,
        writes its checkpoint and metrics line only after `iterate` returns)."""
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
    def run(self) -> dict:
        """Runs to the last iteration; the final state stays available as `self.state`.

        The workdir lock is held until this returns or fails (or the process dies: the kernel releases it).
        """
        if not self._lock.held:
            self._lock = rundir.Lock(self.workdir)
        try:
            return self._run()
        finally:
            self._lock.release()

    def _run(self) -> dict:
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
