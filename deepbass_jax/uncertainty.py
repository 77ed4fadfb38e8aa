"""MC-dropout inference (section 3.2) and the uncertainty scores built on it.

Shapes: `probs` are MC samples [T, N, C] (T stochastic passes, N samples, C classes); `mean_probs` are [N, C].
All scores are normalized by log(C), so each lies in [0, 1]. `chunk_stats` scores one fixed-size chunk;
`algorithm.pool_stats` runs it over a whole pool.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import entr
from jax.sharding import Mesh

from deepbass_jax.models import ApplyFn


def mc_probs(apply_fn: ApplyFn, params, x: jax.Array, key: jax.Array, num_passes: int) -> jax.Array:
    """Softmax outputs of `num_passes` stochastic passes f^(t)(x, w), vmapped over split keys: [T, N, C]."""
    keys = jax.random.split(key, num_passes)
    return jax.vmap(lambda k: jax.nn.softmax(apply_fn(params, x, k), axis=-1))(keys)


def deterministic_probs(apply_fn: ApplyFn, params, x: jax.Array) -> jax.Array:
    """The deterministic network's softmax f(x, w) (dropout off) as one pass: [1, N, C]. Eq. 7 with T' = 1 and no
    dropout (config.pool_dropout = False: the paper's runs "without MC dropout inference", section 5)."""
    return jax.nn.softmax(apply_fn(params, x), axis=-1)[None]


def predictive_mean(probs: jax.Array) -> jax.Array:
    """Eq. 7: the MC average over passes, [T, N, C] -> [N, C]."""
    return probs.mean(axis=0)


def normalized_entropy(mean_probs: jax.Array) -> jax.Array:
    """Eq. 3: H(y) = -sum_c y_c log y_c / log C, [..., C] -> [...], in [0, 1]."""
    num_classes = mean_probs.shape[-1]
    return entr(mean_probs).sum(axis=-1) / jnp.log(num_classes)


def mutual_information(probs: jax.Array) -> jax.Array:
    """BALD (Houlsby et al. 2011): H(mean_t p_t) - mean_t H(p_t), normalized by log C, [T, N, C] -> [N].

    Non-negative by Jensen's inequality; the clip only removes float round-off below zero.
    """
    gap = normalized_entropy(predictive_mean(probs)) - normalized_entropy(probs).mean(axis=0)
    return jnp.maximum(gap, 0.0)


def variation_ratio(probs: jax.Array) -> jax.Array:
    """Variation ratio (Freeman 1965): 1 - (votes of the modal class) / T, [T, N, C] -> [N], in [0, 1 - 1/C]."""
    num_passes, _, num_classes = probs.shape
    votes = jax.nn.one_hot(probs.argmax(axis=-1), num_classes, dtype=jnp.int32).sum(axis=0)
    return 1.0 - votes.max(axis=-1) / num_passes


def margin(mean_probs: jax.Array) -> jax.Array:
    """Margin uncertainty (Scheffer et al. 2001): 1 - (p_(1) - p_(2)), the gap between the two most probable
    classes of the MC mean taken from 1, [..., C] -> [...], in [0, 1]: the smallest margin scores highest."""
    top_two = jax.lax.top_k(mean_probs, 2)[0]
    return 1.0 - (top_two[..., 0] - top_two[..., 1])


def least_confidence(mean_probs: jax.Array) -> jax.Array:
    """Least confidence (Lewis and Gale 1994): 1 - max_c p_c of the MC mean, [..., C] -> [...], in [0, 1 - 1/C]."""
    return 1.0 - mean_probs.max(axis=-1)


POOL_AXIS = "pool"  # the mesh axis pool inference is sharded along


class UncertaintyStats(NamedTuple):
    """Per-sample results of MC-dropout inference; each field is indexed by sample."""

    mean_probs: jax.Array  # [N, C], eq. 7
    entropy: jax.Array  # [N], eq. 3 of the mean
    mutual_information: jax.Array  # [N], BALD
    variation_ratio: jax.Array  # [N]
    custom: Optional[jax.Array] = None  # [N], the score config.policy imports, of each chunk's passes [T, B, C]


def stats_from_probs(probs: jax.Array) -> UncertaintyStats:
    """All scores from MC samples [T, N, C]."""
    mean_probs = predictive_mean(probs)
    return UncertaintyStats(
        mean_probs=mean_probs,
        entropy=normalized_entropy(mean_probs),
        mutual_information=mutual_information(probs),
        variation_ratio=variation_ratio(probs),
    )


@functools.partial(jax.jit, static_argnames=("apply_fn", "num_passes", "score_fn", "dropout"))
def chunk_stats(apply_fn: ApplyFn, params, images, sample_ids, key, num_passes: int,
                score_fn: Optional[Callable] = None, dropout: bool = True) -> UncertaintyStats:
    """Scores for one fixed-size chunk images [B, ...]; sample i's dropout masks come from
    fold_in(key, sample_ids[i]) (sample_ids [B] uint32), so a sample's scores do not depend on its chunk.
    `score_fn(probs [T, B, C]) -> [B]`, a score of the user's, fills the field `custom`. dropout False: the one
    pass of the deterministic network (`deterministic_probs`; num_passes must be 1, key and sample_ids unread)."""

    def one_sample(x, sample_id):
        return mc_probs(apply_fn, params, x[None], jax.random.fold_in(key, sample_id), num_passes)[:, 0]

    if dropout:
        probs = jax.vmap(one_sample, out_axes=1)(images, sample_ids)  # [T, chunk, C]
    elif num_passes == 1:
        probs = deterministic_probs(apply_fn, params, images)  # [1, chunk, C]
    else:
        raise ValueError(f"inference without dropout is one pass, but num_passes={num_passes}.")
    stats = stats_from_probs(probs)
    return stats if score_fn is None else stats._replace(custom=jnp.asarray(score_fn(probs), jnp.float32))


@functools.partial(jax.jit, static_argnames=("apply_fn", "num_passes"))
def consistent_mc_probs(apply_fn: ApplyFn, params, images, key, num_passes: int) -> jax.Array:
    """Consistent MC dropout (Kirsch et al. 2019, for BatchBALD): softmax outputs [T, B, C] of images [B, ...]
    where pass t applies ONE dropout realization, from split(key, T)[t], to every sample.

    Each sample goes through the network alone, as x[None] with the pass's key, so its row of a mask is row 0 of
    the same draw (layers.HashDropout hashes the row number; nn.Dropout draws for shape [1, ...]): the same mask
    for every sample, whatever the chunk holds or where the sample sits. A whole batch with one key would instead
    give every row a mask of its own. `mc_probs` / `chunk_stats` (masks per sample) stay the default elsewhere.
    """

    def one_pass(pass_key):
        return jax.vmap(lambda x: jax.nn.softmax(apply_fn(params, x[None], pass_key), axis=-1)[0])(images)

    return jax.vmap(one_pass)(jax.random.split(key, num_passes))


def pool_mesh(num_devices: int = 0) -> Optional[Mesh]:
    """A 1-D mesh over the first `num_devices` local devices (0 = all of them) for `algorithm.pool_stats`; None
    when that is a single device."""
    available = jax.local_devices()
    if num_devices < 0 or num_devices > len(available):
        raise ValueError(
            f"asked to shard pool inference over {num_devices} devices, but {len(available)} are available "
            f"({available[0].platform}); use 0 for all of them or 1 for one."
        )
    devices = available[: num_devices or len(available)]
    return Mesh(np.array(devices), (POOL_AXIS,)) if len(devices) > 1 else None
