"""Acquisition policies (line 8 of Algorithm 3.1): which unlabeled samples to ask the oracle about.

A policy is a selector in the registry POLICIES: `(stats, candidate_mask [N] bool, key, n) -> indices [n] int32`,
`stats` the pool's `uncertainty.UncertaintyStats`. It returns `n` distinct candidate indices; when fewer than `n`
candidates remain, all of them followed by -1 padding (the shape stays static under `jit`); `valid_indices`
strips the padding. Score-based selection is one kind (`ScorePolicy`: a field of the statistics and a pure
`(scores [N], candidate_mask, key, n) -> indices` rule such as top-n); a selector that looks at the whole
statistics (a batch-aware one) registers a function of that shape directly.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

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
    """A score-based selector: the uncertainty score it ranks by (a field of `uncertainty.UncertaintyStats`) and
    the rule `select(scores [N], candidate_mask, key, n, **kwargs)` it applies to that score."""

    score: str
    select: SelectFn

    def __call__(self, stats, candidate_mask: jax.Array, key: jax.Array, n: int, **kwargs) -> jax.Array:
        return self.select(getattr(stats, self.score), candidate_mask, key, n, **kwargs)


Selector = Callable[..., jax.Array]  # (stats, candidate_mask [N] bool, key, n, **kwargs) -> indices [n] int32

POLICIES: dict[str, Selector] = {
    "max_entropy": ScorePolicy("entropy", max_score),
    "above_average": ScorePolicy("entropy", above_average_random),
    "random": ScorePolicy("entropy", random),
    "bald": ScorePolicy("mutual_information", max_score),
    "variation_ratio": ScorePolicy("variation_ratio", max_score),
}


def get(name: str) -> Selector:
    if name not in POLICIES:
        raise ValueError(f"acquisition policy {name!r} is unknown; choose one of {sorted(POLICIES)}.")
    return POLICIES[name]


def valid_indices(indices) -> np.ndarray:
    """Host-side: the selected indices without the -1 padding, [<= n] (dtype of `indices`)."""
    indices = np.asarray(indices)
    return indices[indices >= 0]
