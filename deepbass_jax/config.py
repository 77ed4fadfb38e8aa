"""The run config: every field with its default (the paper's MNIST setting), and the checks that refuse a run that
cannot go, each naming the field, the problem and the remedy, in two stages: `validate` the config alone (and the
number of processes) before any data is read, `validate_run` the config with each seed's data and pool before any
work."""

from __future__ import annotations

import copy
import functools
from typing import Sequence

import jax
import ml_collections
import numpy as np

from deepbass_jax import acquisition, augment, data, layers, models, pseudo_label, train, user_code

SEED_AXIS_CHOICES = ("auto", "vmap", "map")  # config.seed_axis; algorithm.SEED_AXES once resolved


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
    config.policy = "max_entropy"  # a name in acquisition.POLICIES or BATCH_POLICIES (batchbald), or
    # "package.module:score" (probs [T', B, C] -> [B])
    config.batch_candidates = 1000  # a batch policy (batchbald) chooses among this many samples of top BALD
    config.batch_passes = 100  # ... from this many consistent MC-dropout passes over them (one mask for all)
    config.above_average_reference = "mean"  # "mean" (eq. 14) or "theta" (the authors' code)
    config.acquire_every = 10  # k: acquire in iterations 1, 1 + k, 1 + 2k, ...
    config.acquire_count = 10  # n: labels per acquisition
    config.budget = 300  # total ground-truth labels, initial ones included
    config.mc_passes_pool = 10  # T': MC-dropout passes on the pool
    config.pool_dropout = True  # pool inference (line 5, eq. 7) with MC dropout; False: the deterministic network's
    # softmax, one pass (mc_passes_pool 1), as in the paper's runs "without MC dropout inference" (section 5); theta's
    # T passes over the ground truth (eq. 8) keep their dropout
    config.mc_passes_labeled = 100  # T: MC-dropout passes on the ground truth, for theta (eq. 8)
    config.theta = -1.0  # -1: computed by eq. 8 (step-wise) / 1 in all-data mode; else a fixed threshold in [0, 1]
    # Guards against pseudo-labels that lock in (beyond the paper; off by default):
    config.pseudo_alignment = False  # distribution alignment (ReMixMatch): each sample's MC mean is multiplied by
    # the ground truth's class frequencies over the unlabeled pool's mean prediction, renormalized, before eq. 4
    config.pseudo_confidence = 0.0  # > 0: D takes only unlabeled samples whose (aligned) MC mean reaches this top
    # class probability, beside theta (FixMatch: 0.95); 0: off
    config.restart_epochs = 0  # > 0: after the last iteration a freshly initialized network trains this many epochs on
    # the final D ("a clean restart with the final data splitting", section 6); the summary reports both networks
    config.log_theta = False  # where the run does not use eq. 8's theta (all data), compute it anyway for the
    # metrics lines: T = mc_passes_labeled passes over the ground truth every iteration
    # DBAL, the active learning protocol of Gal, Islam, Ghahramani 2017 (beyond the paper; 0 and 0: lines 5 and 12):
    config.retrain_epochs = 0  # > 0: line 12 re-initializes the network every iteration (a key of the seed and the
    # iteration) and trains it this many epochs on the ground truth x upsample (Gal: 50); 0: one more epoch of it
    config.pool_subset = 0  # > 0: line 5 scores a random subset of this many unlabeled pool samples (a key of the
    # iteration; Gal: 2,000) and line 8 chooses among them; 0: the whole pool. labels.csv is then written at the end
    config.chunk_size = 256  # pool inference chunk (memory ~ chunk_size * T'; 256-512 is fastest on CPU)
    config.labeled_chunk_size = 64  # ground-truth inference chunk (memory ~ labeled_chunk_size * T)
    config.pool_devices = 1  # local devices pool inference is sharded across (0 = all); chunks are per device
    config.pool_size = 0  # use a seeded random subset of this many training samples as the pool (0 = all)
    config.test_size = 0  # evaluate on the first this many test samples (0 = all)
    config.val_size = 0  # samples held out of the pool for validation (0 = the paper's setting)
    config.oracle = "simulated"  # "simulated" (reveals held-back labels) or "file" (a person answers a CSV)
    config.oracle_wait_seconds = 0.0  # FileOracle: how long to wait for answers before stopping (may change on resume)
    config.stop_set_size = 1000  # pool samples whose predictions the stopping signal compares (stop_set_kappa)
    config.stop_when_stable = 0.0  # > 0: end the run once the stop-set kappa stayed at least this (e.g. 0.99) in 3
    # consecutive iterations (stabilizing predictions, Bloodgood and Vijay-Shanker 2009); 0: run every iteration
    config.tensorboard = False  # also write each metrics line as TensorBoard scalars in <run>/tensorboard
    config.calibration_mc = False  # also log the test set's calibration of the MC mean of T' = mc_passes_pool
    # dropout passes ("test_ece_mc", "test_nll_mc"): T' forward passes over the test set every iteration
    config.figures = True  # when a run finishes: curves.png, and decision_boundary.png for 2-D data (matplotlib)
    config.labels_export_every = 1  # write labels.csv every this many iterations and at the end (0: only at the
    # end, -1: never, e.g. for results tables, where the end's extra pass over the pool is time for nothing)
    config.num_seeds = 1  # R: run seeds seed ... seed + R - 1 at once in one compiled program
    config.seed_axis = "auto"  # how R seeds share it: "vmap", "map" (lax.map), "auto" (map on CPU, else vmap)
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
    "train.augment_shift": "the maximum shift of ground-truth augmentation as a fraction of height/width; 0 is off",
    "num_seeds": "R, the seeds run at once",
    "train.steps_per_call": "training steps sent to the device as one program",
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


def validate(config: ml_collections.ConfigDict, process_count: int = 1) -> None:
    """Stage 1: fails early, naming the field, on settings that cannot run (before any data is loaded), alone or
    over `process_count` processes."""
    for field, known in _unknown_fields(config, default_config()):
        parent, _, name = field.rpartition(".")
        raise ConfigError(
            f"config.{field}: unknown config field {name!r} (a typo?); the fields of "
            f"config{'.' + parent if parent else ''} are {', '.join(known)}."
        )
    checks = [
        ("mode", config.mode in pseudo_label.MODES, f"one of {pseudo_label.MODES}"),
        ("policy", config.policy in {**acquisition.POLICIES, **acquisition.BATCH_POLICIES}
         or user_code.is_import_path(config.policy),
         f"one of {sorted({**acquisition.POLICIES, **acquisition.BATCH_POLICIES})} or your score as "
         "'package.module:function'"),
        ("batch_candidates", config.batch_candidates >= config.acquire_count,
         "at least config.acquire_count (a batch is chosen among them)"),
        ("batch_passes", config.batch_passes >= 1, "at least 1"),
        ("above_average_reference", config.above_average_reference in ("mean", "theta"), "'mean' or 'theta'"),
        ("oracle", config.oracle in ("simulated", "file"), "'simulated' or 'file'"),
        ("mc_passes_pool", config.mc_passes_pool >= 1, "at least 1"),
        ("mc_passes_pool", config.pool_dropout or config.mc_passes_pool == 1,
         "1 when config.pool_dropout is False (the network without dropout gives one pass)"),
        ("mc_passes_labeled", config.mc_passes_labeled >= 1, "at least 1"),
        ("theta", config.theta == -1 or 0 <= config.theta <= 1, "-1 (computed) or a fixed threshold in [0, 1]"),
        ("acquire_every", config.acquire_every >= 1, "at least 1"),
        ("acquire_count", config.acquire_count >= 1, "at least 1"),
        ("budget", config.budget >= 1, "at least 1"),
        ("iterations", config.iterations >= 0, "0 or more"),
        ("initial_per_class", config.initial_per_class >= 1, "at least 1"),
        ("initial_epochs", config.initial_epochs >= 1, "at least 1"),
        ("model.architecture", config.model.architecture in models.ARCHITECTURES
         or user_code.is_import_path(config.model.architecture),
         f"one of {sorted(models.ARCHITECTURES)} or your flax module as 'package.module:Class'"),
        ("model.dropout_rate", 0 < config.model.dropout_rate < 1, "strictly between 0 and 1"),
        ("model.dropout_masks", config.model.dropout_masks in models.DROPOUT_MASKS,
         f"one of {sorted(models.DROPOUT_MASKS)}"),
        ("model.kernels", config.model.kernels in layers.KERNELS, f"one of {layers.KERNELS}"),
        ("train.upsample", config.train.upsample >= 1, "at least 1"),
        ("train.pseudo_weight", config.train.pseudo_weight > 0, "positive"),
        ("train.pseudo_targets", config.train.pseudo_targets in train.PSEUDO_TARGETS,
         f"one of {sorted(train.PSEUDO_TARGETS)}"),
        ("train.pseudo_ramp_start", config.train.pseudo_ramp_start >= 0, "0 or more (an iteration)"),
        ("train.pseudo_ramp_end", config.train.pseudo_ramp_end >= config.train.pseudo_ramp_start,
         "at least config.train.pseudo_ramp_start (the ramp's last iteration; both 0: no ramp)"),
        ("restart_epochs", config.restart_epochs == 0 or config.train.pseudo_targets == "iteration",
         "0 with train.pseudo_targets='step' (the fresh network would label D with its own untrained guesses)"),
        ("train.augment_degrees", 0 <= config.train.augment_degrees < 180, "in [0, 180) (the paper: below 10)"),
        ("train.augment_scale", 0 <= config.train.augment_scale < 1, "in [0, 1) (the paper: 0.05)"),
        ("train.augment_shift", 0 <= config.train.augment_shift < 0.5,
         "in [0, 0.5) (the paper: none; the authors' code: 0.05)"),
        ("train.augment_warp", config.train.augment_warp in augment.WARPS,
         f"one of {sorted(augment.WARPS)} (augment.register_warp adds one)"),
        ("train.steps_per_call", config.train.steps_per_call >= 1, "at least 1"),
        ("train.strong_degrees", 0 <= config.train.strong_degrees < 180, "in [0, 180) (e.g. 25)"),
        ("train.strong_scale", 0 <= config.train.strong_scale < 1, "in [0, 1) (e.g. 0.2)"),
        ("train.strong_shift", 0 <= config.train.strong_shift < 0.5, "in [0, 0.5) (e.g. 0.125)"),
        ("train.strong_cutout", 0 <= config.train.strong_cutout <= 1, "in [0, 1] (0: no cutout; e.g. 0.3)"),
        ("train.augment_warp", not config.train.strong_augment or config.train.augment_warp == "affine",
         "'affine' with train.strong_augment (the strong view and the ground truth's share one affine warp)"),
        ("pseudo_confidence", 0 <= config.pseudo_confidence < 1, "0 (off) or a probability in (0, 1), e.g. 0.95"),
        ("restart_epochs", config.restart_epochs >= 0, "0 (off) or the epochs of the clean restart, e.g. 20"),
        ("retrain_epochs", config.retrain_epochs >= 0, "0 (off: one epoch per iteration) or more (DBAL: 50)"),
        ("retrain_epochs", config.retrain_epochs == 0 or not config.semi_supervised,
         "0 when config.semi_supervised is True (a network retrained on the ground truth alone ignores "
         "pseudo-labels; DBAL is active learning alone: --config.semi_supervised=False)"),
        ("pool_subset", config.pool_subset == 0 or config.pool_subset >= config.acquire_count,
         "0 (the whole pool) or at least config.acquire_count (DBAL: 2000)"),
        ("pool_subset", config.pool_subset == 0 or not config.semi_supervised,
         "0 when config.semi_supervised is True (pseudo-labels need every pool sample's scores; DBAL is active "
         "learning alone: --config.semi_supervised=False)"),
        ("stop_set_size", config.stop_set_size >= 1, "at least 1"),
        ("stop_when_stable", 0 <= config.stop_when_stable <= 1, "0 (off) or a kappa in (0, 1], e.g. 0.99"),
        ("val_size", config.val_size >= 0, "0 or more"),
        ("data.test_fraction", 0 <= config.data.test_fraction < 1,
         "in [0, 1): the fraction of the labeled samples held out as the test set (0: none)"),
        ("pool_size", config.pool_size >= 0, "0 (all) or more"),
        ("test_size", config.test_size >= 0, "0 (all) or more"),
        ("pool_devices", config.pool_devices >= 0, "0 (all local devices) or more"),
        ("num_seeds", config.num_seeds >= 1, "at least 1"),
        ("labels_export_every", config.labels_export_every >= -1, "-1 (never), 0 (only at the end) or more"),
        ("oracle_wait_seconds", config.oracle_wait_seconds >= 0, "0 (stop and resume) or more"),
        ("seed_axis", config.seed_axis in SEED_AXIS_CHOICES, f"one of {SEED_AXIS_CHOICES}"),
        ("oracle", config.num_seeds == 1 or config.oracle == "simulated",
         "'simulated' when config.num_seeds > 1 (a person cannot answer R runs in lockstep)"),
    ]
    for field, ok, expected in checks:
        if not ok:
            value = functools.reduce(getattr, field.split("."), config)
            meaning = f" ({_MEANINGS[field]})" if field in _MEANINGS else ""
            raise ConfigError(
                f"config.{field}={value!r} is invalid{meaning}: it must be {expected}; set --config.{field} "
                "to such a value."
            )
    if user_code.is_import_path(config.model.architecture):
        models.import_module_class(config.model.architecture)
    models.module_kwargs(config.model)
    acquisition.score_function(config.policy)
    if process_count > 1:
        _validate_processes(config, process_count)


def _validate_processes(config: ml_collections.ConfigDict, count: int) -> None:
    """What several processes cannot do (yet)."""
    checks = [
        ("num_seeds", config.num_seeds == 1, "1 (one run over several processes)"),
        ("val_size", config.val_size == 0, "0 (a validation set would need every process's images)"),
        ("train.augment_degrees", not augmenting(config),
         "0 with train.augment_scale and train.augment_shift 0 (augmentation is single-process)"),
        ("train.strong_augment", not config.train.strong_augment, "False (augmentation is single-process)"),
        ("policy", config.policy not in acquisition.BATCH_POLICIES, "a policy of one process's (batch policies "
         "score their candidates on one process)"),
        ("model.dropout_masks", config.model.dropout_masks == "hash",
         "'hash' (its masks follow a row's place in the global batch)"),
        ("pool_subset", config.pool_subset == 0, "0 (each process scores its shard of the whole pool)"),
        ("train.even_batches", not config.train.even_batches, "False (its padded batches are single-process)"),
        ("train.batch_size", config.train.batch_size % count == 0,
         f"a multiple of the {count} processes (each takes an equal slice of every batch)"),
    ]
    for field, ok, expected in checks:
        if not ok:
            raise ConfigError(f"config.{field} must be {expected} when {count} processes run.")


def validate_run(config: ml_collections.ConfigDict, seeds: Sequence[tuple], process_count: int = 1) -> None:
    """Stage 2, before any work: the config with each seed's data over `process_count` processes. `seeds`: per
    seed (its config, its Dataset, its pool indices [N] into the training set, as `algorithm.split_pool` draws
    them)."""
    for seed_config, dataset, _ in seeds:
        if dataset.train_labels is None and config.oracle == "simulated":
            raise ValueError(f"data {config.data.name!r} has no labels: use --config.oracle=file.")
        models.check_input_shape(config.model, dataset.input_shape)
        num_train = dataset.train_images.shape[0]
        if config.val_size + (config.pool_size or num_train - config.val_size) > num_train:
            raise ValueError(
                f"config.val_size={config.val_size} + config.pool_size={config.pool_size} exceed the "
                f"{num_train} training samples of {config.data.name!r}; set --config.pool_size=0 to use them all"
                + (f" (and --config.val_size below {num_train})." if config.val_size else ".")
            )
    first_config, first, first_pool = seeds[0]
    models.check_network(config.model, first.input_shape, first.num_classes, process_count)
    acquisition.check_score(config.policy, config.mc_passes_pool, first.num_classes)
    for seed_config, dataset, pool in seeds[1:]:
        if (len(pool), dataset.input_shape, dataset.num_classes) != (len(first_pool), first.input_shape,
                                                                      first.num_classes):
            raise ValueError(
                f"seed {seed_config.seed} has a pool of {(len(pool), *dataset.input_shape)} with "
                f"{dataset.num_classes} classes but seed {first_config.seed} one of "
                f"{(len(first_pool), *first.input_shape)} with {first.num_classes}: seeds run at once need pools of "
                "one shape."
            )
    if config.train.strong_augment and len(first.input_shape) != 3:
        raise ConfigError(
            f"config.train.strong_augment warps images [N, H, W, C], but {config.data.name!r} has samples of shape "
            f"{tuple(first.input_shape)}; set --config.train.strong_augment=False."
        )
    if augmenting(config) and len(first.input_shape) != 3:
        raise ConfigError(
            f"config.train.augment_degrees={config.train.augment_degrees} / augment_scale="
            f"{config.train.augment_scale} / augment_shift={config.train.augment_shift} warp images "
            f"[N, H, W, C], but {config.data.name!r} has samples of shape {tuple(first.input_shape)}; set them to 0."
        )
    check_budget(config, len(first_pool))
    for seed_config, dataset, pool in seeds:
        _check_initial_labels(seed_config, dataset, pool)


def _check_initial_labels(config: ml_collections.ConfigDict, dataset, pool) -> None:
    """Line 1 can draw its initial labels from the pool: enough samples, and of each class for a balanced draw."""
    given = getattr(dataset, "given_labels", None)
    if config.initial_all or (given is not None and (np.asarray(given)[pool] >= 0).any()):
        return  # known labels replace the initial draw
    count = config.initial_per_class * dataset.num_classes
    if count > len(pool):
        raise ConfigError(
            f"config.initial_per_class={config.initial_per_class} asks for {count} initial labels "
            f"({dataset.num_classes} classes), more than the pool of {len(pool)} samples holds; lower "
            f"config.initial_per_class to at most {len(pool) // dataset.num_classes}, or use a larger pool "
            "(config.pool_size, 0 = all)."
        )
    if dataset.train_labels is not None and config.oracle == "simulated":
        data.check_per_class(dataset.train_labels[pool], config.initial_per_class, dataset.num_classes)


def augmenting(config: ml_collections.ConfigDict) -> bool:
    """Whether ground-truth samples are warped (any of train.augment_degrees / _scale / _shift above 0)."""
    return augment.warps(config.train.augment_degrees, config.train.augment_scale, config.train.augment_shift)


def seed_configs(config: ml_collections.ConfigDict, num_seeds: int | None = None) -> list:
    """The configs of seeds config.seed ... config.seed + num_seeds - 1 (config.num_seeds if None), each a deep copy
    (which keeps field references: yinyang's data.seed follows seed)."""
    configs = []
    for r in range(config.num_seeds if num_seeds is None else num_seeds):
        seed_config = copy.deepcopy(config)
        seed_config.seed = config.seed + r
        configs.append(seed_config)
    return configs


def seed_axis(config: ml_collections.ConfigDict, backend: str | None = None) -> str:
    """config.seed_axis with "auto" resolved: "map" on the CPU (bitwise equal to separate runs), else "vmap"."""
    if config.seed_axis != "auto":
        return config.seed_axis
    return "map" if (backend or jax.default_backend()) == "cpu" else "vmap"


def check_budget(config: ml_collections.ConfigDict, pool_size: int) -> None:
    """The oracle cannot label more than the pool holds."""
    if config.active and config.budget > pool_size:
        raise ConfigError(
            f"config.budget={config.budget} exceeds the pool of {pool_size} samples: the oracle cannot label more "
            f"than the pool holds; lower config.budget to at most {pool_size}, or use a larger pool "
            "(config.pool_size, 0 = all)."
        )
