"""What each iteration's metrics line holds: monitoring only; nothing the algorithm decides depends on it.

Besides the accuracies: how far to trust the network (its calibration on the test set: "test_ece", "test_nll"), and
the pure pieces of a stopping signal, stabilizing predictions (Bloodgood and Vijay-Shanker 2009): the agreement
(Cohen's kappa) of consecutive networks' predictions on a fixed stop set."""

from __future__ import annotations

import pathlib

from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from deepbass_jax import algorithm, calibration
from deepbass_jax.workdir import checkpoint, runfolder
from deepbass_jax.algorithm import RunState


CALIBRATION_STREAM = 0x63616C69  # fold_in data of the MC calibration key: fold_in(key(seed), CALIBRATION_STREAM)
STOP_SET_STREAM = 0x73746F70  # second seed word of the stop set's draw, apart from the pool split's


def metrics_line(config: ml_collections.ConfigDict, hidden_labels: Optional[np.ndarray], state: RunState, entropy,
                 theta, bought: int, train_loss: float, ground_truth_accuracy: float, seconds: float,
                 num_classes: int) -> dict:
    """The metrics line of a finished iteration (held-out accuracy aside).

    entropy [N]: the pool entropy the iteration decided with (NaN: a sample it did not score, config.pool_subset);
    theta: eq. 8's or the fixed one, None where the run computed none (all data without config.log_theta);
    hidden_labels [N] or None (with them, the pseudo-labels' accuracy and confusion counts,
    `pseudo_label_confusion`); ground_truth_accuracy: the network's on the ground truth X.
    """
    labeled, selected = state.labeled, state.selected
    scored = ~labeled & ~np.isnan(np.asarray(entropy))  # the unlabeled samples line 5 scored (config.pool_subset: a subset)
    line = {
        "iteration": state.iteration,
        "labels": int(labeled.sum()),
        "bought": bought,
        "pseudo_labeled": int(selected.sum()),
        "d_size": int(labeled.sum()) * config.train.upsample + int(selected.sum()),
        "theta": None if theta is None else float(theta),
        "mean_pool_entropy": float(np.asarray(entropy)[scored].mean()) if scored.any() else 0.0,
        "train_loss": train_loss,
        "ground_truth_accuracy": float(ground_truth_accuracy),
        "pseudo_label_coverage": float(selected.sum() / max((~labeled).sum(), 1)),
        "pseudo_label_accuracy": None,
        "seconds": seconds,
    }
    if hidden_labels is not None and selected.any():
        line["pseudo_label_accuracy"] = float(np.mean(state.pseudo[selected] == hidden_labels[selected]))
        line.update(pseudo_label_confusion(hidden_labels[selected], state.pseudo[selected], num_classes))
    return line


def seeds_lines(seeds, iteration: int, entropy, logged_theta, bought, epochs, ground_truth_accuracy, seconds: float,
                held_out: list[dict], agreement, phase_seconds: dict) -> list[dict]:
    """Each seed's metrics line of iteration t (`metrics_line`, the held-out metrics, the stop-set kappa and the
    phases' seconds of all seeds together, whose "metrics" entry the driver fills in after): entropy [R, N],
    per seed its logged theta, labels bought, epoch metrics, ground-truth accuracy and held-out dict."""
    lines = []
    for r, seed in enumerate(seeds):
        seed.state.iteration = iteration  # the line needs the sets alone, not the network
        line = metrics_line(seed.config, seed.hidden_labels, seed.state, entropy[r], logged_theta[r], bought[r],
                            epochs[r].loss, ground_truth_accuracy[r], seconds, seed.dataset.num_classes)
        line.update(held_out[r], stop_set_kappa=float(agreement[r]), phase_seconds=phase_seconds)
        lines.append(line)
    return lines


MAX_CONFUSION_CLASSES = 20  # up to this many classes a line holds the whole C x C counts, beyond it the top pairs
TOP_CONFUSIONS = 50


def pseudo_label_confusion(true_labels: np.ndarray, pseudo: np.ndarray, num_classes: int) -> dict:
    """The pseudo-labels' confusion with the true labels (both [M] over D's pseudo-labeled samples), compact for a
    metrics line: {"pseudo_label_confusion": C x C counts, row = true class, column = pseudo-label} for up to
    MAX_CONFUSION_CLASSES classes, else {"pseudo_label_top_confusions": [[true, pseudo, count], ...]}, the
    TOP_CONFUSIONS largest wrong pairs."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (np.asarray(true_labels, np.int64), np.asarray(pseudo, np.int64)), 1)
    if num_classes <= MAX_CONFUSION_CLASSES:
        return {"pseudo_label_confusion": counts.tolist()}
    wrong = counts * (1 - np.eye(num_classes, dtype=np.int64))
    order = np.argsort(-wrong, axis=None, kind="stable")[:TOP_CONFUSIONS]
    pairs = [[int(t), int(p), int(wrong[t, p])] for t, p in zip(*np.unravel_index(order, wrong.shape)) if wrong[t, p]]
    return {"pseudo_label_top_confusions": pairs}


def held_out_accuracy(apply_fn, params, seed_axis: str, test_images=None, test_labels=None, shared_test: bool = True,
                      val_images=None, val_labels=None, calibration_keys=None, calibration_passes: int = 0
                      ) -> list[dict]:
    """Per seed, on a labeled test set (images [M, ...] and labels [M] if `shared_test`, else [R, M, ...] and
    [R, M]): the test accuracy, and the deterministic network's calibration: "test_ece" (Guo et al.'s expected
    calibration error, `calibration.NUM_BINS` bins) and "test_nll" (the mean -log p of the true class), all from
    one program over the set's chunks (`algorithm.seeds_evaluate`; the accuracy counts the same argmax as
    `algorithm.seeds_accuracy`). With calibration_passes = T' > 0 (and calibration_keys [R]) also "test_ece_mc" and
    "test_nll_mc" of the mean of T' MC-dropout passes (eq. 7). Given samples held out of the pool ([R, V, ...] and
    [R, V]), the validation accuracy. params [R, ...]: all seeds in one program per set. FloatingPointError when a
    prediction is NaN or Inf."""
    results = [{} for _ in range(jax.tree_util.tree_leaves(params)[0].shape[0])]
    if test_images is not None:
        num_test = test_images.shape[0 if shared_test else 1]
        sums = algorithm.seeds_evaluate(apply_fn, params, test_images, test_labels, shared_test, seed_axis, "test",
                                        keys=calibration_keys, num_passes=calibration_passes)
        values = {"test_accuracy": sums.right / num_test, "test_ece": calibration.ece_from_bins(sums.bins),
                  "test_nll": sums.nll / num_test}
        if calibration_passes:
            values.update(test_ece_mc=calibration.ece_from_bins(sums.mc_bins), test_nll_mc=sums.mc_nll / num_test)
        for r, result in enumerate(results):
            result.update({key: float(value[r]) for key, value in values.items()})
    if val_images is not None:
        accuracies = algorithm.seeds_accuracy(apply_fn, params, val_images, val_labels, False, seed_axis, "validation")
        for result, accuracy in zip(results, accuracies):
            result["val_accuracy"] = float(accuracy)
    return results


def stop_set_indices(num_pool: int, size: int, seed: int) -> np.ndarray:
    """A fixed stop set for stabilizing predictions: min(size, num_pool) sorted pool indices [S] drawn without
    replacement, a function of `seed` alone (a stream apart from the pool split's)."""
    chosen = np.random.default_rng([seed, STOP_SET_STREAM]).choice(num_pool, min(size, num_pool), replace=False)
    return np.sort(chosen)


def kappa(a: jax.Array, b: jax.Array, num_classes: int) -> jax.Array:
    """Cohen's kappa of two labelings a, b [..., S] int in [0, C) -> [...]: (p_o - p_e) / (1 - p_e), p_o the
    fraction of equal entries, p_e = sum_c freq_a(c) freq_b(c) the agreement of independent labelings with these
    class frequencies. 1 for identical labelings (also both one constant class, where p_e = 1), about 0 for
    independent ones, negative below chance; symmetric in a and b. Stabilizing predictions (Bloodgood and
    Vijay-Shanker 2009) stops once kappa between consecutive networks on a stop set stays high (their rule: the
    mean of the last three above 0.99)."""
    # In counts, (S agree - sum_c n_a(c) n_b(c)) / (S^2 - sum_c n_a(c) n_b(c)): no division by S, which XLA makes a
    # product with a rounded 1 / S, so identical labelings give exactly 1 and the two orders the same floats.
    size = jnp.float32(a.shape[-1])
    agree = jnp.sum(a == b, axis=-1, dtype=jnp.float32)
    counts_a = jax.nn.one_hot(a, num_classes, dtype=jnp.float32).sum(axis=-2)  # [..., C]
    counts_b = jax.nn.one_hot(b, num_classes, dtype=jnp.float32).sum(axis=-2)
    by_chance = jnp.sum(counts_a * counts_b, axis=-1)
    denominator = size * size - by_chance  # 0 only where both are one and the same class throughout
    return jnp.where(denominator > 0, (size * agree - by_chance) / jnp.where(denominator > 0, denominator, 1.0), 1.0)


def _same_array(arrays) -> bool:
    """Whether `arrays` are views of one memory with one layout (seeds cut the same test set)."""
    return len({(a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str) for a in arrays}) == 1


class HeldOut:
    """The seeds' test sets (one device copy when they share one, as seeds of one data set do) and validation
    sets, ready to be evaluated every iteration (`accuracy`). `config` (the run's; None: defaults) gives
    config.calibration_mc, T' = config.mc_passes_pool and the seeds config.seed + r of the MC calibration's keys."""

    def __init__(self, datasets, val_indices, config: Optional[ml_collections.ConfigDict] = None):
        self.test, self.validation, self.calibration = {}, {}, {}
        first = datasets[0]
        self.input_shape = tuple(first.input_shape)
        if first.test_images is not None and first.test_labels is not None:
            shared = _same_array([d.test_images for d in datasets])
            self.test = {"test_images": jnp.asarray(first.test_images if shared else
                                                    np.stack([d.test_images for d in datasets])),
                         "test_labels": first.test_labels if shared else np.stack([d.test_labels for d in datasets]),
                         "shared_test": shared}
            if config is not None and config.calibration_mc:
                keys = [jax.random.fold_in(jax.random.key(config.seed + r), CALIBRATION_STREAM)
                        for r in range(len(datasets))]
                self.calibration = {"calibration_keys": jnp.stack(keys),
                                    "calibration_passes": config.mc_passes_pool}
        if len(val_indices[0]):
            self.validation = {"val_images": np.stack([d.train_images[v] for d, v in zip(datasets, val_indices)]),
                               "val_labels": np.stack([d.train_labels[v] for d, v in zip(datasets, val_indices)])}

    @classmethod
    def of_seeds(cls, seeds) -> "HeldOut":
        """The held-out sets of the run's seeds (seeds.Seed: .dataset, .val_indices, .config)."""
        return cls([s.dataset for s in seeds], [s.val_indices for s in seeds], seeds[0].config)

    def accuracy(self, apply_fn, params, seed_axis: str) -> list[dict]:
        """Per seed {"test_accuracy", "test_ece", "test_nll", "val_accuracy"} as the sets exist, and "test_ece_mc",
        "test_nll_mc" with config.calibration_mc (`held_out_accuracy`)."""
        return held_out_accuracy(apply_fn, params, seed_axis, **self.test, **self.validation, **self.calibration)

    def predict(self, apply_fn, params, seed_axis: str, images) -> np.ndarray:
        """Each seed's deterministic network's classes [R, S] (host numpy) for stop-set images [S, ...] (all seeds
        the same) or [R, S, ...] (each seed its own): one program per shape (`algorithm.seeds_predict`)."""
        shared = np.ndim(images) == len(self.input_shape) + 1
        return algorithm.seeds_predict(apply_fn, params, images, shared, seed_axis)


class StopSignal:
    """The stopping signal's memory (config.stop_set_size): the stop set's images [R, S, ...] and the previous
    network's predictions on them, which each new network's are compared with by Cohen's kappa."""

    def __init__(self, images: np.ndarray, num_classes: int):
        self.images, self.num_classes, self.previous = images, num_classes, None

    def agreement(self, held_out: "HeldOut", apply_fn, params, seed_axis: str) -> np.ndarray:
        """Kappa [R] of this network's stop-set predictions with the previous one's (1 before any previous one)."""
        previous, self.previous = self.previous, held_out.predict(apply_fn, params, seed_axis, self.images)
        if previous is None:
            return np.ones(len(self.images))
        return np.asarray(kappa(previous, self.previous, self.num_classes))


STABLE_WINDOW = 3  # iterations the stop-set kappa must stay at config.stop_when_stable (Bloodgood: 3 windows)


def stable(folders, threshold: float, window: int = STABLE_WINDOW) -> str:
    """Why the run may stop (config.stop_when_stable = `threshold` > 0): every seed's metrics.jsonl in `folders`
    ends with `window` iterations whose stop_set_kappa is at least `threshold`; "" while not (or when off). Read
    from the files, so a resumed run decides as an uninterrupted one."""
    if threshold <= 0:
        return ""
    for folder in folders:
        lines = [line for line in checkpoint.read_jsonl(pathlib.Path(folder) / runfolder.METRICS) if line["iteration"]]
        recent = [line.get("stop_set_kappa") for line in lines[-window:]]
        if len(recent) < window or any(k is None or k < threshold for k in recent):
            return ""
    return (f"the network's predictions on the stop set agreed with the previous network's at Cohen's kappa >= "
            f"{threshold} in {window} consecutive iterations (config.stop_when_stable): labels bought later would "
            "change little")
