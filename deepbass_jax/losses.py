"""Losses: cross-entropy of eqs. 2 and 6, Keras-style L2 weight decay, the negative log-likelihood that
evaluation reports, and Lee (2013)'s ramp of the pseudo-labels' loss weight."""

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


def negative_log_likelihood(logits: jax.Array, labels: jax.Array, weights: jax.Array,
                            reduction: str = "mean") -> jax.Array:
    """The evaluation NLL: sum_i w_i * (-log softmax(logits_i)[labels_i]) / sum_i w_i (reduction "mean"), or the
    numerator alone ("sum": chunks of one set add their sums). A scalar; 0 where every weight is 0.

    logits [B, C] (log-probabilities work too: log_softmax leaves a normalized row as it is), labels [B] int,
    weights [B]: 1 for a sample, 0 for padding. Rows of weight 0 add nothing, whatever their logits or labels
    (the term is the one `cross_entropy` weighs, with its label clipped into [0, C)).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")
    real = weights > 0
    per_sample = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.clip(labels, 0, logits.shape[-1] - 1))
    total = jnp.sum(jnp.where(real, weights * per_sample, 0.0))
    if reduction == "sum":
        return total
    return total / jnp.where(real.any(), jnp.sum(jnp.where(real, weights, 0.0)), 1.0)


def l2_penalty(params, weight: float) -> jax.Array:
    """Keras `l2(weight)` on every kernel: weight * sum of squared kernel entries (biases excluded)."""
    kernels = [
        leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if getattr(path[-1], "key", None) == "kernel"
    ]
    return weight * sum(jnp.sum(jnp.square(kernel)) for kernel in kernels)


def ramp(t: int, start: int, end: int) -> float:
    """Lee (2013)'s balancing coefficient alpha(t) over its final value alpha_f (his eq. 16): 0 for t < start,
    (t - start) / (end - start) for start <= t < end, 1 from t = end on. start = end: a step from 0 to 1 at t = end;
    start = end = 0 (the default config): 1 at every t >= 0, so mu of eq. 6 stays config.train.pseudo_weight.

    t, start, end: ints on the host (iterations of Algorithm 3.1, Lee's epochs); returns a Python float in [0, 1].
    Lee's MNIST runs: alpha_f = 3, start T1 = 100, end T2 = 600 epochs (without pre-training).
    """
    if t >= end:
        return 1.0
    if t < start:
        return 0.0
    return (t - start) / (end - start)
