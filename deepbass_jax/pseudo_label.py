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
