"""What each iteration's metrics line holds: monitoring only; nothing the algorithm decides depends on it."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from deepbass_jax import algorithm
from deepbass_jax.algorithm import RunState


def metrics_line(config: ml_collections.ConfigDict, hidden_labels: Optional[np.ndarray], state: RunState, entropy,
                 theta, bought: int, train_loss: float, ground_truth_accuracy: float, seconds: float) -> dict:
    """The metrics line of a finished iteration (held-out accuracy aside).

    entropy [N]: the pool entropy the iteration decided with; theta: eq. 8's or the fixed one, None where the run
    computed none (all data without config.log_theta); hidden_labels [N] or None; ground_truth_accuracy: the
    network's on the ground truth X.
    """
    labeled, selected = state.labeled, state.selected
    line = {
        "iteration": state.iteration,
        "labels": int(labeled.sum()),
        "bought": bought,
        "pseudo_labeled": int(selected.sum()),
        "d_size": int(labeled.sum()) * config.train.upsample + int(selected.sum()),
        "theta": None if theta is None else float(theta),
        "mean_pool_entropy": float(np.asarray(entropy)[~labeled].mean()) if (~labeled).any() else 0.0,
        "train_loss": train_loss,
        "ground_truth_accuracy": float(ground_truth_accuracy),
        "pseudo_label_coverage": float(selected.sum() / max((~labeled).sum(), 1)),
        "pseudo_label_accuracy": None,
        "seconds": seconds,
    }
    if hidden_labels is not None and selected.any():
        line["pseudo_label_accuracy"] = float(np.mean(state.pseudo[selected] == hidden_labels[selected]))
    return line


def held_out_accuracy(apply_fn, params, seed_axis: str, test_images=None, test_labels=None, shared_test: bool = True,
                      val_images=None, val_labels=None) -> list[dict]:
    """Per seed, the test accuracy (given a labeled test set: images [M, ...] and labels [M] if `shared_test`,
    else [R, M, ...] and [R, M]) and the validation accuracy (given samples held out of the pool: [R, V, ...] and
    [R, V]); params [R, ...]: all seeds in one program per set. FloatingPointError when a prediction is NaN or
    Inf."""
    results = [{} for _ in range(jax.tree_util.tree_leaves(params)[0].shape[0])]
    for key, images, labels, shared, what in (("test_accuracy", test_images, test_labels, shared_test, "test"),
                                              ("val_accuracy", val_images, val_labels, False, "validation")):
        if images is not None:
            accuracies = algorithm.seeds_accuracy(apply_fn, params, images, labels, shared, seed_axis, what)
            for result, accuracy in zip(results, accuracies):
                result[key] = float(accuracy)
    return results


def _same_array(arrays) -> bool:
    """Whether `arrays` are views of one memory with one layout (seeds cut the same test set)."""
    return len({(a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str) for a in arrays}) == 1


class HeldOut:
    """The seeds' test sets (one device copy when they share one, as seeds of one data set do) and validation
    sets, ready to be evaluated every iteration (`accuracy`)."""

    def __init__(self, datasets, val_indices):
        self.test, self.validation = {}, {}
        first = datasets[0]
        if first.test_images is not None and first.test_labels is not None:
            shared = _same_array([d.test_images for d in datasets])
            self.test = {"test_images": jnp.asarray(first.test_images if shared else
                                                    np.stack([d.test_images for d in datasets])),
                         "test_labels": first.test_labels if shared else np.stack([d.test_labels for d in datasets]),
                         "shared_test": shared}
        if len(val_indices[0]):
            self.validation = {"val_images": np.stack([d.train_images[v] for d, v in zip(datasets, val_indices)]),
                               "val_labels": np.stack([d.train_labels[v] for d, v in zip(datasets, val_indices)])}

    def accuracy(self, apply_fn, params, seed_axis: str) -> list[dict]:
        """Per seed {"test_accuracy", "val_accuracy"} as the sets exist (`held_out_accuracy`)."""
        return held_out_accuracy(apply_fn, params, seed_axis, **self.test, **self.validation)
