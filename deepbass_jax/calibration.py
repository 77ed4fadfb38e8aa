"""How far to trust the network's confidence: the expected calibration error (Guo et al. 2017, "On calibration of
modern neural networks", eq. 3) over equal-width confidence bins.

Shapes: `probs` [N, C] (each row a distribution), `labels` [N] int, `weights` [N] (1 for a sample, 0 for padding),
bins [K]. The error is a function of per-bin sums (`calibration_bins`), so sets evaluated in chunks add their chunks'
bins and get the error of the whole set exactly (`ece_from_bins`).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

NUM_BINS = 15  # Guo et al.'s M


class CalibrationBins(NamedTuple):
    """Per confidence bin b = ((b - 1) / K, b / K] (bin 0 also holds confidence 0): fields [..., K]."""

    count: jax.Array  # sum of the weights of the samples whose confidence falls in the bin (|B_b|)
    confidence: jax.Array  # sum of their weighted confidences (|B_b| conf(B_b))
    correct: jax.Array  # sum of the weights of those predicted right (|B_b| acc(B_b))


def bin_index(confidence: jax.Array, num_bins: int) -> jax.Array:
    """The bin [...] int32 of each confidence [...] in [0, 1]: ceil(confidence * K) - 1, clipped to [0, K - 1]."""
    return jnp.clip(jnp.ceil(confidence * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)


def calibration_bins(confidence: jax.Array, correct: jax.Array, weights: jax.Array,
                     num_bins: int = NUM_BINS) -> CalibrationBins:
    """Per-bin sums of one set or chunk: confidence [N] (the predicted class's probability), correct [N] bool,
    weights [N] -> CalibrationBins with fields [K] float32. Rows of weight 0 add nothing, whatever their values
    (NaN included)."""
    real = weights > 0
    in_bin = jax.nn.one_hot(bin_index(jnp.where(real, confidence, 0.0), num_bins), num_bins, dtype=jnp.float32)
    weights = jnp.where(real, weights, 0.0).astype(jnp.float32)[:, None] * in_bin  # [N, K]
    return CalibrationBins(
        count=weights.sum(axis=0),
        confidence=jnp.sum(weights * jnp.where(real, confidence, 0.0)[:, None], axis=0),
        correct=jnp.sum(weights * correct[:, None], axis=0),
    )


def ece_from_bins(bins: CalibrationBins):
    """Eq. 3 of Guo et al.: sum_b |B_b| / N * |acc(B_b) - conf(B_b)| = sum_b |correct_b - confidence_b| / N, in
    [0, 1]; fields [..., K] -> [...]; 0 for an empty set. Numpy in, numpy out (the host sums chunks' bins)."""
    total = bins.count.sum(axis=-1)
    return abs(bins.correct - bins.confidence).sum(axis=-1) / (total + (total == 0))


def expected_calibration_error(probs: jax.Array, labels: jax.Array, num_bins: int = NUM_BINS,
                               weights: Optional[jax.Array] = None) -> jax.Array:
    """The expected calibration error of predictions probs [N, C] against labels [N] over `num_bins` equal-width
    confidence bins (Guo et al. 2017): sum_b |B_b| / N * |acc(B_b) - conf(B_b)|, a scalar in [0, 1]. The
    prediction is argmax probs, its confidence max probs. weights [N] (default all 1) weigh the samples; 0 drops
    one (padding).

    Examples: every prediction at probability 1 and right: 0; at probability 1 and wrong: 1; num_bins=1:
    |mean confidence - accuracy|.
    """
    if weights is None:
        weights = jnp.ones(labels.shape, jnp.float32)
    correct = jnp.argmax(probs, axis=-1) == labels
    return ece_from_bins(calibration_bins(jnp.max(probs, axis=-1), correct, weights, num_bins))
