"""Acquisition policies (line 8 of Algorithm 3.1): which unlabeled samples to ask the oracle about.

A policy is a selector in the registry POLICIES: `(stats, candidate_mask [N] bool, key, n) -> indices [n] int32`,
`stats` the pool's `uncertainty.UncertaintyStats`. It returns `n` distinct candidate indices; when fewer than `n`
candidates remain, all of them followed by -1 padding (the shape stays static under `jit`); `valid_indices`
strips the padding. A policy that needs MC passes of its own over a few candidates (BatchBALD's joint entropy)
is a `BatchPolicy` in BATCH_POLICIES. Score-based selection is one kind (`ScorePolicy`: a field of the statistics and a pure
`(scores [N], candidate_mask, key, n) -> indices` rule such as top-n); a selector that looks at the whole
statistics (a batch-aware one) registers a function of that shape directly.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from deepbass_jax import batchbald, uncertainty, user_code

SelectFn = Callable[[jax.Array, jax.Array, jax.Array, int], jax.Array]


def _top_candidates(priority: jax.Array, candidate_mask: jax.Array, n: int) -> jax.Array:
    """The `n` candidates of highest priority (ties to the lower index), -1 where candidates run out."""
    if n > priority.shape[0]:
        raise ValueError(f"asked for n={n} samples from a pool of only {priority.shape[0]}.")
    masked = jnp.where(candidate_mask, priority.astype(jnp.float32), -jnp.inf)
    values, indices = jax.lax.top_k(masked, n)
    return jnp.where(values > -jnp.inf, indices, -1).astype(jnp.int32)


def max_score(scores: jax.Array, candidate_mask: jax.Array, key: jax.Array, n: int) -> jax.Array:
    """The n candidates with the highest score (max entropy, BALD or variation ratio); `key` is unused."""
    del key
    return _top_candidates(scores, candidate_mask, n)


def random(scores: jax.Array, candidate_mask: jax.Array, key: jax.Array, n: int) -> jax.Array:
    """n candidates uniformly at random, without replacement; `scores` are unused."""
    return _top_candidates(jax.random.uniform(key, scores.shape), candidate_mask, n)


def above_average_random(
    scores: jax.Array,
    candidate_mask: jax.Array,
    key: jax.Array,
    n: int,
    reference: Optional[jax.Array] = None,
) -> jax.Array:
    """Eq. 14: n candidates drawn at random among those whose score exceeds the average.

    The average is taken over all samples, labeled and unlabeled (eq. 14); pass `reference` (e.g. theta,
    as the authors' code did) to compare against another level. If fewer than n candidates lie above it,
    the rest are filled with the highest-scored remaining candidates, so the budget is always spent.
    """
    level = scores.mean() if reference is None else reference
    above = scores > level
    tie_break = jax.random.uniform(key, scores.shape)
    # Above-level candidates rank first (in random order), then the others by score.
    priority = jnp.where(above, scores.max() + 1.0 + tie_break, scores)
    return _top_candidates(priority, candidate_mask, n)


@dataclasses.dataclass(frozen=True)
class ScorePolicy:
    """A score-based selector: the uncertainty score it ranks by (a field of `uncertainty.UncertaintyStats`, or a
    function of them) and the rule `select(scores [N], candidate_mask, key, n, **kwargs)` it applies to it."""

    score: Union[str, Callable[[uncertainty.UncertaintyStats], jax.Array]]
    select: SelectFn

    def scores(self, stats: uncertainty.UncertaintyStats) -> jax.Array:
        return self.score(stats) if callable(self.score) else getattr(stats, self.score)

    def __call__(self, stats, candidate_mask: jax.Array, key: jax.Array, n: int, **kwargs) -> jax.Array:
        return self.select(self.scores(stats), candidate_mask, key, n, **kwargs)


def _margin(stats: uncertainty.UncertaintyStats) -> jax.Array:
    return uncertainty.margin(stats.mean_probs)


def _least_confidence(stats: uncertainty.UncertaintyStats) -> jax.Array:
    return uncertainty.least_confidence(stats.mean_probs)


Selector = Callable[..., jax.Array]  # (stats, candidate_mask [N] bool, key, n, **kwargs) -> indices [n] int32

POLICIES: dict[str, Selector] = {
    "max_entropy": ScorePolicy("entropy", max_score),
    "above_average": ScorePolicy("entropy", above_average_random),
    "random": ScorePolicy("entropy", random),
    "bald": ScorePolicy("mutual_information", max_score),
    "variation_ratio": ScorePolicy("variation_ratio", max_score),
    "margin": ScorePolicy(_margin, max_score),
    "least_confidence": ScorePolicy(_least_confidence, max_score),
}


@dataclasses.dataclass(frozen=True)
class BatchPolicy:
    """A batch-aware selector that needs MC passes of its own: its candidates are the `prefilter` score's top
    config.batch_candidates unlabeled samples (a field of `uncertainty.UncertaintyStats`), and
    `select(probs [T, K, C], n, key, candidate_mask [K]) -> [n]` picks among them from config.batch_passes
    consistent MC-dropout passes (`uncertainty.consistent_mc_probs`; `algorithm.batch_queries` runs it)."""

    prefilter: str
    select: Callable


BATCH_POLICIES: dict[str, BatchPolicy] = {
    "batchbald": BatchPolicy("mutual_information", batchbald.greedy_select),  # Kirsch et al. 2019, top-k BALD first
}
CUSTOM = ScorePolicy("custom", max_score)  # a score of the user's (`score_function`): the highest are bought


def score_function(policy: str) -> Optional[Callable]:
    """The user's `score(probs [T', B, C]) -> [B]` that config.policy names by import path (None for a registered
    policy); ValueError in one line when it cannot be had."""
    if not user_code.is_import_path(policy):
        return None
    found = user_code.resolve(policy, "policy")
    if not callable(found):
        raise ValueError(f"policy={policy!r} is {found!r}, not a function score(probs [T, B, C]) -> [B].")
    return found


def check_score(policy: str, num_passes: int, num_classes: int) -> None:
    """Refuses a score of the user's that does not map probs [T', B, C] to [B] (tried on B = 3 uniform rows)."""
    score = score_function(policy)
    if score is None:
        return
    probs = jnp.full((num_passes, 3, num_classes), 1.0 / num_classes, jnp.float32)
    try:
        shape = jax.eval_shape(score, probs).shape
    except Exception as error:  # the user's code: its failure in one line
        raise ValueError(f"policy={policy!r} fails on probs of shape {probs.shape}: {type(error).__name__}: "
                         f"{str(error).splitlines()[0]}") from error
    if shape != (3,):
        raise ValueError(f"policy={policy!r} maps probs [T', B, C] = {probs.shape} to shape {shape}; it must give one "
                         "score per sample, [B] = (3,).")


def get(name: str) -> Selector:
    if user_code.is_import_path(name):
        return CUSTOM
    if name not in POLICIES:
        raise ValueError(f"acquisition policy {name!r} is unknown; choose one of {sorted(POLICIES)}.")
    return POLICIES[name]


def valid_indices(indices) -> np.ndarray:
    """Host-side: the selected indices without the -1 padding, [<= n] (dtype of `indices`)."""
    indices = np.asarray(indices)
    return indices[indices >= 0]
