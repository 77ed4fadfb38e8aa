"""What each iteration's metrics line holds: monitoring only; nothing the algorithm decides depends on it."""

from __future__ import annotations

from typing import Optional

import ml_collections
import numpy as np

from deepbass_jax import data, train
from deepbass_jax.algorithm import RunState


def metrics_line(config: ml_collections.ConfigDict, apply_fn, ground_truth_images, hidden_labels: Optional[np.ndarray],
                 state: RunState, entropy, theta, bought: int, train_loss: float, seconds: float) -> dict:
    """The metrics line of a finished iteration (held-out accuracy aside).

    ground_truth_images [L, ...]: the labeled pool samples in pool order; entropy [N]: the pool entropy the
    iteration decided with; hidden_labels [N] or None.
    """
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
        "ground_truth_accuracy": train.accuracy(apply_fn, state.train_state.params, ground_truth_images,
                                                state.ground_truth[labeled], "ground-truth"),
        "pseudo_label_coverage": float(selected.sum() / max((~labeled).sum(), 1)),
        "pseudo_label_accuracy": None,
        "seconds": seconds,
    }
    if hidden_labels is not None and selected.any():
        line["pseudo_label_accuracy"] = float(np.mean(state.pseudo[selected] == hidden_labels[selected]))
    return line


def held_out_accuracy(apply_fn, params, dataset: data.Dataset, val_indices: np.ndarray, test_images=None) -> dict:
    """Test accuracy (and validation accuracy when samples were held out of the pool); FloatingPointError when
    a prediction is NaN or Inf. test_images: dataset.test_images already on the device (None: sent from the host)."""
    result = {}
    if dataset.test_images is not None and dataset.test_labels is not None:
        images = dataset.test_images if test_images is None else test_images
        result["test_accuracy"] = train.accuracy(apply_fn, params, images, dataset.test_labels, "test")
    if len(val_indices):
        result["val_accuracy"] = train.accuracy(apply_fn, params, dataset.train_images[val_indices],
                                                dataset.train_labels[val_indices], "validation")
    return result
