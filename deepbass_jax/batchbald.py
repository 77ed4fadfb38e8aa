"""BatchBALD (Kirsch, van Amersfoort, Gal 2019): greedy batch acquisition maximising the mutual information of the
batch's joint labels and the parameters, I(y_1..n; w) = H(y_1..n) - sum_i E_w[H(y_i | x_i, w)].

Shapes: `probs` are MC samples [T, K, C] from consistent MC dropout (`uncertainty.consistent_mc_probs`): pass t is
one dropout realization w_t shared by every sample, so that p(y_1..m) = mean_t prod_i p_t(y_i) is their joint.
All entropies are in nats, NOT normalized by log C (unlike `uncertainty`): BatchBALD of one sample is
`uncertainty.mutual_information` times log C.

The joint of the chosen samples is kept over M label configurations y_1..m as log_joint [T, M], entry [t, j] =
log prod_i p_t(y_i^j): all C^m configurations while C^m <= max_configurations (exact), else num_samples of them
drawn from the joint, whose entropies are importance-weighted (Kirsch et al., section 3.3; `_configurations`).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import entr, logsumexp

# float32 matmuls at full precision: the default on GPUs and TPUs rounds the inputs to bf16 / tf32, which would move
# the joint probabilities (and so the greedy ranking) by about 1e-3.
_PRECISION = jax.lax.Precision.HIGHEST


def conditional_entropies(probs: jax.Array) -> jax.Array:
    """E_w[H(y | x, w)] = mean_t H(p_t), in nats (not normalized by log C), [T, K, C] -> [K]."""
    return entr(probs).sum(axis=-1).mean(axis=0)


def _extend_exact(log_joint: jax.Array, log_p: jax.Array) -> jax.Array:
    """Every configuration [T, M] times every label of one more sample log_p [T, C] -> [T, M * C] (label fastest)."""
    return (log_joint[:, :, None] + log_p[:, None, :]).reshape(log_joint.shape[0], -1)


def _exact_log_joint(log_probs: jax.Array) -> jax.Array:
    """log prod_i p_t(y_i) of all C^m configurations of m samples, log_probs [T, m, C] -> [T, C^m]."""
    log_joint = jnp.zeros((log_probs.shape[0], 1), log_probs.dtype)
    for i in range(log_probs.shape[1]):
        log_joint = _extend_exact(log_joint, log_probs[:, i])
    return log_joint


def _log_marginal(log_joint: jax.Array) -> jax.Array:
    """log p(y_1..m) = log mean_t prod_i p_t(y_i) of each configuration, [T, M] -> [M] (-inf: probability 0)."""
    return logsumexp(log_joint, axis=0) - math.log(log_joint.shape[0])


def _sample_passes(num_samples: int, num_passes: int) -> np.ndarray:
    """The pass each sampled configuration is drawn from, [M]: passes in turn (stratified, every pass when M >= T)."""
    if num_samples < num_passes:
        raise ValueError(f"num_samples={num_samples} must be at least the number of MC passes T={num_passes}: "
                         "sampled configurations are drawn from every pass in turn.")
    return np.arange(num_samples) % num_passes


def _sample_weights(num_samples: int, num_passes: int) -> np.ndarray:
    """Stratified-estimator weights [M], 1 / (T * configurations drawn from that pass): each pass counts 1 / T
    also when T does not divide M."""
    passes = _sample_passes(num_samples, num_passes)
    counts = np.bincount(passes, minlength=num_passes)
    return (1.0 / (num_passes * counts[passes])).astype(np.float32)


def _sample_log_joint(log_probs: jax.Array, key: jax.Array, num_samples: int) -> jax.Array:
    """num_samples configurations drawn from the joint of m samples: configuration j from pass t_j = j mod T, each
    label y_i ~ p_{t_j}(y_i); log_probs [T, m, C] -> log prod_i p_t(y_i^j) [T, M]."""
    num_passes, num_points, _ = log_probs.shape
    passes = _sample_passes(num_samples, num_passes)
    labels = jax.random.categorical(key, log_probs[passes], axis=-1)  # [M, m]
    return log_probs[:, jnp.arange(num_points)[None, :], labels].sum(axis=-1)


def _extend_sampled(log_joint: jax.Array, log_p: jax.Array, key: jax.Array) -> jax.Array:
    """Sampled configurations [T, M] with one more sample's label drawn from each configuration's pass,
    log_p [T, C] -> [T, M]: again draws from the joint, now of m + 1 samples."""
    passes = _sample_passes(log_joint.shape[1], log_joint.shape[0])
    labels = jax.random.categorical(key, log_p[passes], axis=-1)  # [M]
    return log_joint + log_p[:, labels]


def joint_entropy_exact(probs: jax.Array) -> jax.Array:
    """H(y_1..m) = -sum over all C^m configurations of p log p, p(y_1..m) = mean_t prod_i p_t(y_i), in nats;
    probs [T, m, C] -> scalar.

    Memory and time grow as T * C^m (C = 10: m = 6 is 4 MB per pass); for larger m use `joint_entropy_sampled`.
    """
    return entr(jnp.exp(_log_marginal(_exact_log_joint(jnp.log(probs))))).sum()


def joint_entropy_sampled(probs: jax.Array, key: jax.Array, num_samples: int) -> jax.Array:
    """Monte-Carlo estimate of H(y_1..m) = -E log p(y_1..m) from `num_samples` configurations drawn from the joint
    (stratified over the T passes; num_samples >= T), in nats; probs [T, m, C] -> scalar. Standard error about
    std(log p) / sqrt(num_samples); memory T * num_samples * m."""
    num_passes = probs.shape[0]
    log_q = _log_marginal(_sample_log_joint(jnp.log(probs), key, num_samples))
    return -(jnp.asarray(_sample_weights(num_samples, num_passes)) * log_q).sum()


class _Configurations(NamedTuple):
    """The chosen samples' joint over M configurations, in the form candidates are scored with."""

    conditional: jax.Array  # [T, M], p_t(config) / p(config): its mean over t is 1 (all 0 where p(config) = 0)
    weights: jax.Array  # [M], what each configuration's term counts: p(config) (exact) or 1 / (T * its pass's draws)
    entropy: jax.Array  # scalar, H(y_chosen): exact or estimated


def _configurations(log_joint: jax.Array, sample_weights: Optional[jax.Array] = None) -> _Configurations:
    """log_joint [T, M] of exact configurations (sample_weights None) or sampled ones (their weights [M]).

    H(chosen, y) = H(chosen) + sum_config p(config) H(y | config): exact, a sum over all configurations; sampled,
    configurations come from p, so each term is weighted 1 / p(config) (Kirsch et al.'s importance weights) and
    p(config) cancels: sum_j w_j H(y | config_j), w_j the stratified weights. Working with p(y | config) keeps every
    number in [0, 1], whatever the joint's magnitude.
    """
    log_q = _log_marginal(log_joint)
    possible = log_q > -jnp.inf
    safe_log_q = jnp.where(possible, log_q, 0.0)
    conditional = jnp.where(possible, jnp.exp(log_joint - safe_log_q), 0.0)
    if sample_weights is None:
        q = jnp.exp(log_q)
        return _Configurations(conditional, q, entr(q).sum())
    return _Configurations(conditional, sample_weights, -(sample_weights * safe_log_q).sum())


def _joint_entropies(configs: _Configurations, probs: jax.Array, candidate_chunk: int) -> jax.Array:
    """H(chosen, y_k) for every candidate k, probs [T, K, C] -> [K]; `candidate_chunk` candidates at a time bound
    the intermediate p(y_k | config) [chunk, M, C]."""
    num_passes = probs.shape[0]

    def one(p):  # [T, C] -> scalar
        given = jnp.matmul(configs.conditional.T, p, precision=_PRECISION) / num_passes  # [M, C], p(y_k | config)
        return configs.entropy + configs.weights @ entr(given).sum(axis=-1)

    return jax.lax.map(one, jnp.moveaxis(probs, 1, 0), batch_size=candidate_chunk)


def _num_exact_steps(n: int, num_classes: int, max_configurations: int) -> int:
    """How many of the n greedy steps score candidates against the exact joint: step i holds i chosen samples."""
    return next((i for i in range(n) if num_classes**i > max_configurations), n)


class _Greedy(NamedTuple):
    """What changes between greedy steps, besides the joint."""

    available: jax.Array  # [K] bool, candidates not masked out and not chosen
    chosen_conditional: jax.Array  # scalar, sum of the chosen samples' E_w[H(y | x, w)]


@functools.partial(jax.jit, static_argnames=("n", "max_configurations", "num_samples", "candidate_chunk"))
def greedy_batch(probs: jax.Array, n: int, key: jax.Array, candidate_mask: Optional[jax.Array] = None,
                 max_configurations: int = 10_000, num_samples: int = 10_000,
                 candidate_chunk: int = 128) -> tuple[jax.Array, jax.Array]:
    """Kirsch et al.'s greedy BatchBALD (their Algorithm 1): n of the K candidates, probs [T, K, C] -> (indices [n]
    int32, scores [n] float32).

    Step i picks the available candidate maximising H(y_chosen, y_k) - sum of E_w[H(y | x, w)] over chosen and k;
    scores[i] is that maximum, the BatchBALD value of the first i + 1 picks, in nats. The joint is exact while the
    i chosen samples have M = C^i <= max_configurations configurations, afterwards estimated from M = num_samples
    configurations drawn from it (`key`; needs num_samples >= T); a step takes about M * (T + candidate_chunk * C)
    floats and K * M * C * (2 T + 1) operations.
    Candidates where `candidate_mask` [K] is False are never chosen; when fewer than n remain, the indices are
    padded with -1 (score 0). Ties go to the lower index. The first step is BALD (in nats).
    """
    num_passes, num_candidates, num_classes = probs.shape
    if n > num_candidates:
        raise ValueError(f"asked for n={n} samples from only {num_candidates} candidates.")
    if max_configurations < 1:
        raise ValueError(f"max_configurations={max_configurations} must be at least 1.")
    probs = probs.astype(jnp.float32)
    log_probs = jnp.log(probs)
    conditional = conditional_entropies(probs)
    available = jnp.ones(num_candidates, bool) if candidate_mask is None else jnp.asarray(candidate_mask, bool)
    state = _Greedy(available, jnp.zeros((), jnp.float32))

    def pick(configs: _Configurations, state: _Greedy):
        scores = _joint_entropies(configs, probs, candidate_chunk) - conditional - state.chosen_conditional
        scores = jnp.where(state.available, scores, -jnp.inf)
        index = jnp.argmax(scores)
        found = state.available[index]
        state = _Greedy(state.available.at[index].set(False),
                        state.chosen_conditional + jnp.where(found, conditional[index], 0.0))
        # After a padded pick every later one is padded too: `index` then only feeds joints nobody reads.
        return index, jnp.where(found, index, -1).astype(jnp.int32), jnp.where(found, scores[index], 0.0), state

    num_exact = _num_exact_steps(n, num_classes, max_configurations)
    log_joint = jnp.zeros((num_passes, 1), jnp.float32)
    picks, indices, scores = [], [], []
    for step in range(num_exact):
        index, out, score, state = pick(_configurations(log_joint), state)
        picks.append(index)
        indices.append(out)
        scores.append(score)
        if step + 1 < num_exact:
            log_joint = _extend_exact(log_joint, log_probs[:, index])
    if num_exact < n:
        weights = jnp.asarray(_sample_weights(num_samples, num_passes))
        first_key, steps_key = jax.random.split(key)
        log_joint = _sample_log_joint(log_probs[:, jnp.stack(picks)], first_key, num_samples)

        def sampled_step(carry, step_key):
            log_joint, state = carry
            index, out, score, state = pick(_configurations(log_joint, weights), state)
            return (_extend_sampled(log_joint, log_probs[:, index], step_key), state), (out, score)

        _, (tail_indices, tail_scores) = jax.lax.scan(sampled_step, (log_joint, state),
                                                      jax.random.split(steps_key, n - num_exact))
        indices.append(tail_indices)
        scores.append(tail_scores)
    if not indices:
        return jnp.zeros(0, jnp.int32), jnp.zeros(0, jnp.float32)
    return jnp.concatenate([jnp.atleast_1d(i) for i in indices]), jnp.concatenate([jnp.atleast_1d(s) for s in scores])


@functools.partial(jax.jit, static_argnames=("n", "max_configurations", "num_samples", "candidate_chunk"))
def greedy_select(probs: jax.Array, n: int, key: jax.Array, candidate_mask: Optional[jax.Array] = None,
                  max_configurations: int = 10_000, num_samples: int = 10_000, candidate_chunk: int = 128) -> jax.Array:
    """The indices [n] int32 of `greedy_batch` (-1 padded): a BatchBALD batch of the K candidates of probs [T, K, C]."""
    return greedy_batch(probs, n, key, candidate_mask, max_configurations, num_samples, candidate_chunk)[0]
