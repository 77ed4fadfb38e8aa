"""Pseudo-labels (eq. 4), the entropy threshold theta (eq. 8) and the selection of eq. 9.

Sets are boolean masks over the pool [N]: `labeled` holds ground truth X, `selected` the pseudo-labeled
part of D. The two are disjoint: ground truth is never replaced by a pseudo-label.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MODES = ("all_data", "step_wise")


def pseudo_labels(mean_probs: jax.Array) -> jax.Array:
    """Eq. 4: psi(y) = argmax_c y_c, [N, C] -> [N] int32."""
    return jnp.argmax(mean_probs, axis=-1).astype(jnp.int32)


def threshold(labeled_entropy: jax.Array) -> jax.Array:
    """Eq. 8: theta = mean normalized entropy of the ground-truth data under T passes, [|X|] -> scalar."""
    if labeled_entropy.shape[0] == 0:
        raise ValueError("theta (eq. 8) is the mean entropy of the labeled data, but no sample is labeled.")
    return labeled_entropy.mean()


def select(
    entropy: jax.Array, theta: jax.Array, labeled: jax.Array, selected: jax.Array, mode: str
) -> jax.Array:
    """Eq. 9: the pseudo-labeled part of D after this iteration, a mask [N].

    "step_wise" adds every unlabeled sample with entropy < theta to the previous selection (D only grows);
    "all_data" (theta = 1) selects every unlabeled sample. Labeled samples are never selected, so a sample
    bought from the oracle leaves the pseudo-labeled set.
    """
    unlabeled = ~labeled
    if mode == "all_data":
        return unlabeled
    if mode == "step_wise":
        return (selected | (entropy < theta)) & unlabeled
    raise ValueError(f"pseudo-label mode {mode!r} is unknown; choose one of {MODES}.")


# ------------------------------------------------------------ guards against lock-in (beyond the paper)
def class_frequencies(ground_truth: jax.Array, num_classes: int) -> jax.Array:
    """The ground truth's class frequencies with add-one smoothing: ground_truth [N] int (-1: no label) -> [C]."""
    counts = jnp.sum(jax.nn.one_hot(ground_truth, num_classes) * (ground_truth >= 0)[:, None], axis=0)
    return (counts + 1.0) / (counts.sum() + num_classes)


def align_distribution(mean_probs: jax.Array, unlabeled: jax.Array, target: jax.Array) -> jax.Array:
    """Distribution alignment (Berthelot et al. 2020, ReMixMatch): p~ = normalize(p * target / mean_u(p)), where
    mean_u is the mean prediction over the unlabeled samples. A class the network over-predicts on the pool (the
    7 -> 9 drift of a run that locks in) is scaled down before eq. 4 takes the argmax.

    mean_probs [N, C], unlabeled [N] bool, target [C] (e.g. `class_frequencies`) -> [N, C], rows summing to 1.
    """
    weights = unlabeled.astype(mean_probs.dtype)[:, None]
    pool_mean = jnp.sum(mean_probs * weights, axis=0) / jnp.maximum(weights.sum(), 1.0)
    aligned = mean_probs * target / jnp.maximum(pool_mean, 1e-12)
    return aligned / jnp.maximum(aligned.sum(axis=-1, keepdims=True), 1e-12)


def confident(mean_probs: jax.Array, confidence: float) -> jax.Array:
    """The samples whose top class probability reaches `confidence` (FixMatch's threshold): [N, C] -> [N] bool."""
    return mean_probs.max(axis=-1) >= confidence
