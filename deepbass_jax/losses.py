"""Losses: cross-entropy of eqs. 2 and 6 and Keras-style L2 weight decay."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array, num_valid=None) -> jax.Array:
    """Eqs. 2/6: sum_i w_i * (-log softmax(logits_i)[labels_i]) / #{i : w_i > 0}.

    logits [B, C], labels [B] int, weights [B]: 1 for ground truth, mu for pseudo-labels (eq. 6),
    0 for batch padding. Returns a scalar; with all weights 1 it is the plain batch mean. `num_valid` replaces
    the count #{i : w_i > 0} when the rows are a slice of a larger batch (data parallelism: the whole batch's).
    """
    per_sample = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if num_valid is None:
        num_valid = jnp.maximum(jnp.sum(weights > 0), 1)
    return jnp.sum(weights * per_sample) / num_valid


def l2_penalty(params, weight: float) -> jax.Array:
    """Keras `l2(weight)` on every kernel: weight * sum of squared kernel entries (biases excluded)."""
    kernels = [
        leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if getattr(path[-1], "key", None) == "kernel"
    ]
    return weight * sum(jnp.sum(jnp.square(kernel)) for kernel in kernels)
