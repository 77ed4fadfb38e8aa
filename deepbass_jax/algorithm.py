"""Algorithm 3.1 as pure pieces over a leading seed axis R (R = 1: one run).

Host pieces (numpy, per seed): the pool split, keys, initial labels, the acquisition schedule, theta, sampling
plans. Device pieces run for all R seeds in one compiled program: MC-dropout statistics of a pool chunk,
the acquisition choice, the pseudo-label refresh and a training step. `seed_axis` says how:
  "vmap"  `jax.vmap`: one batched operation per layer for all seeds (per-seed weights make the CNN's convolutions
          grouped ones): fast on accelerators; floats may differ from separate runs in the last bits, because a
          batched product may sum in another order.
  "map"   `lax.map`: a loop over seeds inside the program; every operation keeps one run's shapes, so results
          equal separate runs bit for bit; the choice on a CPU.
With R = 1 both call the function once on the squeezed arguments: one run's program.
Seeds whose epoch has fewer steps than the longest take exact no-op steps (`jnp.where` keeps their state).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from deepbass_jax import acquisition, calibration, data, losses, models, pseudo_label, train, uncertainty
from deepbass_jax import augment as augment_lib
from deepbass_jax.chunks import pad_rows, padded_chunks

SEED_AXES = ("vmap", "map")
MIN_ACCURACY_CHUNK = 64  # the smallest chunk `seeds_accuracy` pads a set to


# ------------------------------------------------------------------------------------------ host pieces
def split_pool(config: ml_collections.ConfigDict, dataset: data.Dataset):
    """Seeded by config.seed: (dataset with the test set cut to `test_size`, validation indices, pool indices).

    The validation indices come first in one permutation, then the pool (all the rest, or `pool_size`;
    `config.validate_run` refuses more than the training set holds).
    """
    num_train = dataset.train_images.shape[0]
    wanted = config.val_size + (config.pool_size or num_train - config.val_size)
    order = np.random.default_rng(config.seed).permutation(num_train)
    val_indices = np.sort(order[: config.val_size])
    pool_indices = np.sort(order[config.val_size : wanted])
    if config.test_size and dataset.test_images is not None:
        dataset = dataclasses.replace(
            dataset,
            test_images=dataset.test_images[: config.test_size],
            test_labels=None if dataset.test_labels is None else dataset.test_labels[: config.test_size],
        )
    return dataset, val_indices, pool_indices


def setup_keys(key: jax.Array):
    """Keys of iteration 0 of the run `key`: parameter init, the training dropout stream, the initial fit's plans."""
    return jax.random.split(jax.random.fold_in(key, 0), 3)


RESTART_STREAM = 0x72657374  # fold_in data of the clean restart's run key (config.restart_epochs)
RETRAIN_STREAM = 0x72747261  # ... of DBAL's retrained networks' run keys (config.retrain_epochs)
SUBSET_STREAM = 0x73756273  # ... of the pool subsets' keys (config.pool_subset)


def iteration_keys(key: jax.Array, iteration: int):
    """Keys of iteration t >= 1: pool inference, ground-truth inference (theta), acquisition, training plan."""
    return jax.random.split(jax.random.fold_in(key, iteration), 4)


def retrain_key(key: jax.Array, iteration: int) -> jax.Array:
    """The run key of the network that iteration t >= 1 trains afresh (config.retrain_epochs): its parameters,
    dropout stream and epoch plans come from it as a run's from `setup_keys`."""
    return jax.random.fold_in(jax.random.fold_in(key, RETRAIN_STREAM), iteration)


def pool_subset(key: jax.Array, iteration: int, labeled: np.ndarray, size: int) -> np.ndarray:
    """Line 5 under config.pool_subset (DBAL): the pool indices [min(size, |unlabeled|)] (ascending, int32) that
    iteration t scores, uniformly at random among the unlabeled samples (labeled [N] bool) with the iteration's
    key; a run key and iteration give the same subset."""
    subset_key = jax.random.fold_in(jax.random.fold_in(key, SUBSET_STREAM), iteration)
    priority = np.where(labeled, np.inf, np.asarray(jax.random.uniform(subset_key, labeled.shape)))
    size = min(size, int((~labeled).sum()))
    return np.sort(np.argsort(priority, kind="stable")[:size]).astype(np.int32)


def pool_subsets(size: int, keys, labeled: np.ndarray, iteration: int) -> Optional[np.ndarray]:
    """DBAL's line 5 (config.pool_subset = `size`): each seed's `pool_subset` [R, S'] of iteration t (keys: the seeds'
    run keys, labeled [R, N]; S' = size or, near the pool's end, what every seed has left); None where size is 0 or
    nothing is left: the whole pool is scored."""
    unlabeled = int((~labeled).sum(axis=1).min())
    if not size or not unlabeled:
        return None
    return np.stack([pool_subset(key, iteration, seed_labeled, min(size, unlabeled))
                     for key, seed_labeled in zip(keys, labeled)])


def on_whole_pool(stats: uncertainty.UncertaintyStats, subsets: Optional[np.ndarray],
                  num_pool: int) -> uncertainty.UncertaintyStats:
    """The scores of subsets [R, S] (fields [R, S, ...]) placed in the pool: fields [R, N, ...], NaN where a sample
    was not scored; `stats` itself when subsets is None (the whole pool was)."""
    if subsets is None:
        return stats
    rows = np.arange(len(subsets))[:, None]

    def place(field):
        whole = np.full((field.shape[0], num_pool, *field.shape[2:]), np.nan, field.dtype)
        whole[rows, subsets] = field
        return whole

    return uncertainty.UncertaintyStats(*(None if f is None else place(f) for f in stats))


def initial_train_state(module, apply_fn, key: jax.Array, input_shape, train_config) -> train.TrainState:
    """The untrained network of the run `key` with its optimizer state."""
    init_key, dropout_key, _ = setup_keys(key)
    params = models.init_params(module, init_key, input_shape)
    return train.create_train_state(apply_fn, params, dropout_key, train_config)


def initial_train_states(apply_fn, keys, input_shape, train_config) -> train.TrainState:
    """Untrained networks stacked on the seed axis, seed r's from run key keys[r] (`initial_train_state`)."""
    return stack([initial_train_state(apply_fn.module, apply_fn, key, input_shape, train_config) for key in keys])


def initial_indices(config: ml_collections.ConfigDict, hidden_labels: Optional[np.ndarray], num_pool: int,
                    num_classes: int) -> np.ndarray:
    """Line 1: the pool indices of the initial ground truth (seeded by config.seed; `config.validate_run` checked
    that the pool holds them)."""
    if config.initial_all:
        return np.arange(num_pool)
    if hidden_labels is not None and config.oracle == "simulated":
        # The paper's balanced initial set: choosing it uses the labels, as the paper's setup does.
        return data.balanced_initial_labels(hidden_labels, config.initial_per_class, config.seed, num_classes)
    count = config.initial_per_class * num_classes
    return np.sort(np.random.default_rng(config.seed).choice(num_pool, count, False))


def acquisition_count(config: ml_collections.ConfigDict, iteration: int, num_labeled: int) -> int:
    """Lines 8-11: how many labels iteration t buys; every k-th iteration from the first, within the budget."""
    room = config.budget - num_labeled
    if config.active and (iteration - 1) % config.acquire_every == 0 and room > 0:
        return min(config.acquire_count, room)
    return 0


def theta_is_used(config: ml_collections.ConfigDict) -> bool:
    """Whether eq. 8's theta decides anything in an iteration: step-wise pseudo-labels (eq. 9), or above-average
    acquisition compared with theta. All data pseudo-labels every unlabeled sample (theta = 1), and runs without
    pseudo-labels have none to select."""
    return bool((config.semi_supervised and config.mode == "step_wise")
                or (config.active and config.policy == "above_average" and config.above_average_reference == "theta"))


def computes_theta(config: ml_collections.ConfigDict) -> bool:
    """Whether an iteration runs the T MC passes over the ground truth for eq. 8: where theta is used or
    config.log_theta asks for it, and not fixed by config.theta."""
    return config.theta < 0 and (theta_is_used(config) or bool(config.log_theta))


def threshold(config: ml_collections.ConfigDict, labeled_entropy=None) -> jax.Array:
    """Theta: the fixed config.theta when that is in [0, 1]; else eq. 8 over the ground truth's entropy [|X|] where
    the run computes it (`computes_theta`), and 1 where it does not (all data: every unlabeled sample)."""
    if config.theta >= 0:
        return jnp.float32(config.theta)
    if labeled_entropy is None:
        return jnp.float32(1.0)
    return pseudo_label.threshold(labeled_entropy)


def seeds_theta(config: ml_collections.ConfigDict, apply_fn, params, labeled_images, keys, seed_axis: str, mesh,
                num_seeds: int) -> tuple[np.ndarray, list]:
    """Eq. 8 for every seed: (the theta [R] an iteration decides with, the one its metrics lines log).

    Where the run computes eq. 8 (`computes_theta`), T = config.mc_passes_labeled MC passes over each seed's ground
    truth labeled_images [R, |X|, ...] (on the host: `pool_stats` pads its last chunk there, so a new number of
    labels compiles nothing). Without them the lines log a fixed config.theta, or None in all data (theta = 1):
    nothing there reads eq. 8.
    """
    if not computes_theta(config):
        theta = np.full(num_seeds, threshold(config), np.float32)
        return theta, list(theta) if config.theta >= 0 else [None] * num_seeds
    stats = pool_stats(apply_fn, params, labeled_images, keys, config.mc_passes_labeled, config.labeled_chunk_size,
                       False, seed_axis, mesh)
    theta = np.stack([np.asarray(threshold(config, e), np.float32) for e in stats.entropy])
    return theta, list(theta)


def query_indices(stats: uncertainty.UncertaintyStats, theta: jax.Array, labeled: jax.Array, key: jax.Array,
                  count: int, policy: str, reference: str = "mean") -> jax.Array:
    """Line 8: `count` unlabeled pool indices [count] chosen by `policy`, -1-padded (pure, jit/vmap-able).

    labeled [N] bool; `reference` is config.above_average_reference ("theta": compare with theta, not eq. 14).
    """
    kwargs = {"reference": theta} if (policy == "above_average" and reference == "theta") else {}
    return acquisition.get(policy)(stats, ~labeled, key, count, **kwargs)


def batch_candidates(scores: np.ndarray, unlabeled: np.ndarray, num_candidates: int) -> np.ndarray:
    """A batch policy's prefilter: the unlabeled samples (unlabeled [N] bool) of the highest `scores` [N], best
    first -> pool indices [min(num_candidates, N)] int32, fewer where the unlabeled run out."""
    return acquisition.valid_indices(acquisition.max_score(
        jnp.asarray(scores), jnp.asarray(unlabeled), None, min(num_candidates, len(scores))))


@functools.partial(jax.jit, static_argnames=("apply_fn", "num_passes"))
def _consistent_chunk(apply_fn, params, images, key, num_passes: int):
    return uncertainty.consistent_mc_probs(apply_fn, params, images, key, num_passes)


def consistent_passes(apply_fn, params, images: np.ndarray, key, num_passes: int,
                      chunk_size: int) -> tuple[jax.Array, jax.Array]:
    """`num_passes` consistent MC-dropout passes (one mask per pass, shared by every image) over images [K, ...] of
    one seed (params unstacked), in chunks of `chunk_size` zero-padded rows (one compiled shape) -> (probs
    [T, K', C], real [K'] bool: the rows of the K images), K' = K rounded up to whole chunks."""
    count = len(images)
    padded = -(-count // chunk_size) * chunk_size
    images = pad_rows(images, padded, 0)
    probs = jnp.concatenate([_consistent_chunk(apply_fn, params, images[start: start + chunk_size], key, num_passes)
                             for start in range(0, padded, chunk_size)], axis=1)
    return probs, jnp.arange(padded) < count


def batch_queries(policy: acquisition.BatchPolicy, apply_fn, params, stats: uncertainty.UncertaintyStats,
                  labeled: np.ndarray, images_of, keys, count: int, num_candidates: int, num_passes: int,
                  chunk_size: int) -> np.ndarray:
    """Line 8 for a batch-aware policy (BatchBALD), seed by seed: each seed's `num_candidates` unlabeled samples of
    the highest `policy.prefilter` score (`batch_candidates`), `num_passes` consistent MC-dropout passes over them
    (`consistent_passes`), then `policy.select`.

    params [R, ...], stats fields [R, N, ...], labeled [R, N] bool, images_of(r, indices [k]) -> [k, ...], keys [R]
    -> pool indices [R, count] int32, -1-padded.
    """
    chosen = np.full((len(labeled), count), -1, np.int32)
    for r, key in enumerate(keys):
        passes_key, select_key = jax.random.split(key)
        candidates = batch_candidates(getattr(stats, policy.prefilter)[r], ~labeled[r], num_candidates)
        if not len(candidates):
            continue
        probs, real = consistent_passes(apply_fn, unstack(params, r), images_of(r, candidates), passes_key,
                                        num_passes, chunk_size)
        picked = acquisition.valid_indices(policy.select(probs, min(count, len(candidates)), select_key, real))
        chosen[r, : len(picked)] = candidates[picked]
    return chosen


def seeds_choices(config: ml_collections.ConfigDict, apply_fn, params, stats: uncertainty.UncertaintyStats, theta,
                  labeled: np.ndarray, keys, count: int, subsets: Optional[np.ndarray], images_of,
                  seed_axis: str) -> np.ndarray:
    """Line 8 for every seed: the pool indices [R, count] (-1-padded) config.policy chooses, by `seeds_queries` or
    a batch policy's `batch_queries`. stats [R, N, ...] with labeled [R, N]; or, with subsets [R, S]
    (config.pool_subset), stats [R, S, ...] of those unlabeled samples, among which the policy chooses.
    images_of(r, pool indices) -> seed r's images."""
    to_pool = (lambda r, rows: rows) if subsets is None else (lambda r, rows: np.where(rows >= 0, subsets[r][rows], -1))
    if subsets is not None:  # the subset is the pool that line 8 sees; it holds unlabeled samples only
        labeled = np.zeros(subsets.shape, bool)
    if config.policy in acquisition.BATCH_POLICIES:  # one process (config.validate)
        chosen = batch_queries(acquisition.BATCH_POLICIES[config.policy], apply_fn, params, stats, labeled,
                               lambda r, rows: images_of(r, to_pool(r, rows)), keys, count, config.batch_candidates,
                               config.batch_passes, max(1, config.chunk_size * config.mc_passes_pool
                                                        // config.batch_passes))
    else:
        chosen = np.asarray(seeds_queries(stats, theta, jnp.asarray(labeled), keys, count=count, policy=config.policy,
                                          reference=config.above_average_reference, seed_axis=seed_axis))
    return np.stack([to_pool(r, np.asarray(rows)) for r, rows in enumerate(chosen)])


def refresh_pseudo_labels(stats: uncertainty.UncertaintyStats, theta: jax.Array, labeled: jax.Array,
                          selected: jax.Array, mode: str, ground_truth: Optional[jax.Array] = None,
                          alignment: bool = False, confidence: float = 0.0) -> jax.Array:
    """Lines 6-7, eqs. 4 and 9: the pseudo-label [N] int32 of every sample in the new D, -1 outside it.

    The guards against lock-in (config.pseudo_alignment, config.pseudo_confidence; off: the paper's lines): with
    `alignment` eq. 4 takes the argmax of the MC mean aligned to the class frequencies of ground_truth [N] (-1: no
    label); with `confidence` > 0 only samples whose (aligned) top probability reaches it stay in D.
    """
    in_d = pseudo_label.select(stats.entropy, theta, labeled, selected, mode)
    probs = stats.mean_probs
    if alignment:
        target = pseudo_label.class_frequencies(ground_truth, probs.shape[-1])
        probs = pseudo_label.align_distribution(probs, ~labeled, target)
    if confidence > 0:
        in_d = in_d & pseudo_label.confident(probs, confidence)
    return jnp.where(in_d, pseudo_label.pseudo_labels(probs), -1).astype(jnp.int32)


@dataclasses.dataclass
class RunState:
    """Everything that changes from one iteration to the next; a checkpoint holds exactly this."""

    iteration: int  # completed iterations (0 = after the initial fit)
    train_state: train.TrainState
    ground_truth: np.ndarray  # [N] int32, label from the oracle or -1
    pseudo: np.ndarray  # [N] int32, current pseudo-label of a sample in D or -1

    @property
    def labeled(self) -> np.ndarray:
        return self.ground_truth >= 0

    @property
    def selected(self) -> np.ndarray:
        return self.pseudo >= 0

    def targets(self, computed_pseudo_labels: bool = False) -> np.ndarray:
        """Training labels [N]: ground truth where known, else the pseudo-label (-1 outside D). With
        `computed_pseudo_labels` (config.train.pseudo_targets "step") every pseudo-labeled sample's is -1 too: the
        training step computes it (`train.step_targets`)."""
        return np.where(self.labeled, self.ground_truth, -1 if computed_pseudo_labels else self.pseudo).astype(np.int32)


# ---------------------------------------------------------------------------------------- device pieces
def per_seed(fn, seed_axis: str, batched: Sequence[bool], *args):
    """fn(*args of seed r) for every seed, over the args flagged in `batched` (leading axis [R]; the others are
    shared), with `jax.vmap` or `lax.map` (see the module docstring); one seed: a single call."""
    sliced = [a for a, b in zip(args, batched) if b]
    if jax.tree_util.tree_leaves(sliced)[0].shape[0] == 1:
        squeezed = iter(jax.tree_util.tree_map(lambda x: x[0], sliced))
        out = fn(*(next(squeezed) if b else a for a, b in zip(args, batched)))
        return jax.tree_util.tree_map(lambda x: x[None], out)
    if seed_axis == "vmap":
        return jax.vmap(fn, in_axes=tuple(0 if b else None for b in batched))(*args)

    def one(seed_args):
        seed_args = iter(seed_args)
        return fn(*(next(seed_args) if b else a for a, b in zip(args, batched)))

    return jax.lax.map(one, tuple(sliced))


@functools.partial(jax.jit, static_argnames=("apply_fn", "num_passes", "shared_images", "seed_axis", "score_fn",
                                             "dropout"))
def seeds_chunk_stats(apply_fn, params, images, sample_ids, keys, num_passes: int, shared_images: bool,
                      seed_axis: str, score_fn=None, dropout: bool = True) -> uncertainty.UncertaintyStats:
    """Line 5 and eq. 7 for one chunk: `uncertainty.chunk_stats` per seed; params [R, ...], images [R, B, ...]
    ([B, ...] if shared), sample_ids [B] ([R, B]: each seed's own), keys [R] -> UncertaintyStats with fields
    [R, B, ...]. dropout False: the deterministic network's one pass (config.pool_dropout)."""
    def one(p, x, k, ids):
        return uncertainty.chunk_stats(apply_fn, p, x, ids, k, num_passes, score_fn, dropout)

    return per_seed(one, seed_axis, (True, not shared_images, True, sample_ids.ndim == 2), params, images, keys,
                    sample_ids)


@functools.partial(jax.jit, static_argnames=("count", "policy", "reference", "seed_axis"))
def seeds_queries(stats, theta, labeled, keys, count: int, policy: str, reference: str, seed_axis: str):
    """Line 8: `query_indices` per seed; stats [R, N, ...], theta [R], labeled [R, N], keys [R] -> [R, count]."""
    one = lambda s, t, m, k: query_indices(s, t, m, k, count, policy, reference)  # noqa: E731
    return per_seed(one, seed_axis, (True,) * 4, stats, theta, labeled, keys)


@functools.partial(jax.jit, static_argnames=("mode", "seed_axis", "alignment", "confidence"))
def seeds_pseudo_labels(stats, theta, labeled, selected, mode: str, seed_axis: str, ground_truth=None,
                        alignment: bool = False, confidence: float = 0.0):
    """Lines 6-7: `refresh_pseudo_labels` per seed; stats [R, N, ...], theta [R], labeled / selected [R, N],
    ground_truth [R, N] (needed with `alignment`) -> [R, N]."""
    if ground_truth is None:
        ground_truth = jnp.where(labeled, 0, -1)  # unread unless `alignment`
    def one(stats, theta, labeled, selected, ground_truth):
        return refresh_pseudo_labels(stats, theta, labeled, selected, mode, ground_truth, alignment, confidence)

    return per_seed(one, seed_axis, (True,) * 5, stats, theta, labeled, selected, ground_truth)


@functools.partial(jax.jit, donate_argnums=0,
                   static_argnames=("shared_images", "seed_axis", "augment_degrees", "augment_scale", "augment_shift",
                                    "augment_warp", "strong_view"))
def seeds_train_step(states, images, targets, batch_indices, batch_weights, augment, take_step, shared_images: bool,
                     seed_axis: str, augment_degrees: float = 0.0, augment_scale: float = 0.0,
                     augment_shift: float = 0.0, augment_warp: str = "affine",
                     strong_view: Optional[augment_lib.StrongView] = None):
    """Line 12, one step: `train.train_step` per seed; states [R], images [R, N, ...] ([N, ...] if shared),
    targets [R, N], batch_indices / batch_weights / augment [R, B], take_step [R] bool. A seed with take_step
    False keeps its whole state (an Adam step on a zero-weight batch would still move it through the L2 term
    and the moments). With a `strong_view`, augment [R, B] holds each row's view (`augment_lib.two_views`).

    The gather from the pool and the step are one program: it compiles once per pool shape. (Split in two, the
    step would compile once for every pool size, but under lax.map its loss no longer matched a single run's
    to the bit.)"""
    augmenting = augment_lib.warps(augment_degrees, augment_scale, augment_shift) or strong_view is not None

    def one(state, images, targets, indices, weights, warp, take):
        new_state, metrics = train.train_step(state, images, targets, indices, weights, warp if augmenting else None,
                                              augment_degrees, augment_scale, augment_shift, augment_warp,
                                              strong_view)
        keep = lambda new, old: jnp.where(take, new, old)  # noqa: E731
        metrics = jax.tree_util.tree_map(lambda m: jnp.where(take, m, jnp.zeros_like(m)), metrics)
        return jax.tree_util.tree_map(keep, new_state, state), metrics

    batched = (True, not shared_images, True, True, True, True, True)
    return per_seed(one, seed_axis, batched, states, images, targets, batch_indices, batch_weights, augment, take_step)


@functools.partial(jax.jit, donate_argnums=0,
                   static_argnames=("shared_images", "seed_axis", "augment_degrees", "augment_scale", "augment_shift",
                                    "augment_warp", "strong_view"))
def seeds_train_steps(states, totals: train.StepMetrics, images, targets, batch_indices, batch_weights, augment,
                      take_step, shared_images: bool, seed_axis: str, augment_degrees: float = 0.0,
                      augment_scale: float = 0.0, augment_shift: float = 0.0, augment_warp: str = "affine",
                      strong_view: Optional[augment_lib.StrongView] = None):
    """K consecutive `seeds_train_step`s in one program (`lax.scan`): batch_indices / batch_weights / augment
    [K, R, B], take_step [K, R]; totals: running sums [R] of the steps' metrics, returned with these K added
    one by one (as a loop over seeds_train_step adds them). One call instead of K spares an accelerator K - 1
    dispatches and host transfers."""
    def step(carry, batch):
        states, totals = carry
        states, metrics = seeds_train_step.__wrapped__(states, images, targets, *batch, shared_images=shared_images,
                                                       seed_axis=seed_axis, augment_degrees=augment_degrees,
                                                       augment_scale=augment_scale, augment_shift=augment_shift,
                                                       augment_warp=augment_warp, strong_view=strong_view)
        return (states, jax.tree_util.tree_map(jnp.add, totals, metrics)), None

    (states, totals), _ = jax.lax.scan(step, (states, totals), (batch_indices, batch_weights, augment, take_step))
    return states, totals


@functools.partial(jax.jit, static_argnames=("apply_fn", "shared_images", "seed_axis", "chunk_size"))
def seeds_correct(apply_fn, params, images, labels, shared_images: bool, seed_axis: str, chunk_size: int):
    """Each seed's deterministic network (dropout off) over a whole padded set, `chunk_size` samples at a time in
    one program: images [M, ...] with labels [M] ([R, M, ...] and [R, M] unless shared), M a multiple of
    chunk_size, label -1 on padding rows -> per seed the number of right predictions [R] and of predictions whose
    logits hold NaN or Inf [R], over the rows whose label is not -1."""
    axis = 0 if shared_images else 1

    def chunk_major(x):  # [..., M, ...] -> [M / chunk_size, ..., chunk_size, ...]
        return jnp.moveaxis(x.reshape(*x.shape[:axis], -1, chunk_size, *x.shape[axis + 1:]), axis, 0)

    def predict(p, x):
        logits = apply_fn(p, x)
        return logits.argmax(axis=-1), jnp.isfinite(logits).all(axis=-1)

    def add_chunk(counts, chunk):
        chunk_images, chunk_labels = chunk
        predicted, finite = per_seed(predict, seed_axis, (True, not shared_images), params, chunk_images)  # [R, B]
        real = chunk_labels >= 0
        return (counts[0] + jnp.sum((predicted == chunk_labels) & real, axis=-1),
                counts[1] + jnp.sum(~finite & real, axis=-1)), None

    zeros = jnp.zeros(jax.tree_util.tree_leaves(params)[0].shape[0], jnp.int32)
    (right, not_finite), _ = jax.lax.scan(add_chunk, (zeros, zeros), (chunk_major(images), chunk_major(labels)))
    return right, not_finite


class EvaluationSums(NamedTuple):
    """Per-seed sums over an evaluated set (`seeds_evaluation`) of the rows whose label is not -1; fields [R, ...].
    Sums, not means, so that the chunks of a set add up to the whole set exactly."""

    right: jax.Array  # [R] int32: right predictions of the deterministic network (argmax of its logits)
    not_finite: jax.Array  # [R] int32: predictions whose logits hold NaN or Inf
    nll: jax.Array  # [R] float32: sum of -log softmax(logits)[label] (losses.negative_log_likelihood)
    bins: calibration.CalibrationBins  # fields [R, K]: the deterministic network's confidence bins
    mc_nll: Optional[jax.Array] = None  # [R]: the same of the MC mean of num_passes dropout passes (eq. 7)
    mc_bins: Optional[calibration.CalibrationBins] = None  # fields [R, K]: the MC mean's confidence bins


def _mc_log_mean_probs(apply_fn, params, images, sample_ids, key, num_passes: int) -> jax.Array:
    """log of eq. 7's MC mean of `num_passes` softmax outputs, images [B, ...] -> [B, C], computed as
    logsumexp_t log_softmax - log T (finite where a mean probability underflows). Sample i's passes use the keys
    of pool inference: split(fold_in(key, sample_ids[i]), T) (`uncertainty.chunk_stats`)."""
    def one_sample(x, sample_id):
        keys = jax.random.split(jax.random.fold_in(key, sample_id), num_passes)
        return jax.vmap(lambda k: jax.nn.log_softmax(apply_fn(params, x[None], k), axis=-1)[0])(keys)  # [T, C]

    log_probs = jax.vmap(one_sample)(images, sample_ids)  # [B, T, C]
    return jax.scipy.special.logsumexp(log_probs, axis=1) - jnp.log(jnp.float32(num_passes))


def _chunk_major(x, axis: int, chunk_size: int):
    """[..., M, ...] (M along `axis`) -> [M / chunk_size, ..., chunk_size, ...]."""
    return jnp.moveaxis(x.reshape(*x.shape[:axis], -1, chunk_size, *x.shape[axis + 1:]), axis, 0)


@functools.partial(jax.jit, static_argnames=("apply_fn", "shared_images", "seed_axis", "chunk_size", "num_bins",
                                             "num_passes"))
def seeds_evaluation(apply_fn, params, images, labels, keys, shared_images: bool, seed_axis: str, chunk_size: int,
                     num_bins: int = calibration.NUM_BINS, num_passes: int = 0) -> EvaluationSums:
    """`seeds_correct` and calibration in one pass: each seed's deterministic network over a whole padded set,
    `chunk_size` samples at a time in one program: images [M, ...] with labels [M] ([R, M, ...] and [R, M] unless
    shared), M a multiple of chunk_size, label -1 on padding rows -> EvaluationSums [R, ...] over the rows whose
    label is not -1: the right predictions (the argmax of the logits, as `seeds_correct` counts them), the
    non-finite ones, the NLL and the `num_bins` confidence bins. With num_passes = T' > 0 also those of the MC mean
    of T' dropout passes, sample i's from fold_in(keys[r], i) (keys [R]; None when num_passes is 0)."""
    axis = 0 if shared_images else 1
    num_seeds = jax.tree_util.tree_leaves(params)[0].shape[0]

    def evaluate(p, x, y, sample_ids, key):
        logits = apply_fn(p, x)
        predicted = logits.argmax(axis=-1)
        real = y >= 0
        weights = real.astype(jnp.float32)
        right = predicted == y
        sums = EvaluationSums(
            jnp.sum(right & real), jnp.sum(~jnp.isfinite(logits).all(axis=-1) & real),
            losses.negative_log_likelihood(logits, y, weights, "sum"),
            calibration.calibration_bins(jax.nn.softmax(logits, axis=-1).max(axis=-1), right, weights, num_bins))
        if num_passes:
            log_probs = _mc_log_mean_probs(apply_fn, p, x, sample_ids, key, num_passes)
            sums = sums._replace(
                mc_nll=losses.negative_log_likelihood(log_probs, y, weights, "sum"),
                mc_bins=calibration.calibration_bins(jnp.exp(log_probs.max(axis=-1)), log_probs.argmax(axis=-1) == y,
                                                     weights, num_bins))
        return sums

    def add_chunk(totals, chunk):
        chunk_images, chunk_labels, sample_ids = chunk
        sums = per_seed(evaluate, seed_axis, (True, not shared_images, not shared_images, False, num_passes > 0),
                        params, chunk_images, chunk_labels, sample_ids, keys)
        return jax.tree_util.tree_map(jnp.add, totals, sums), None

    counts, sums = jnp.zeros(num_seeds, jnp.int32), jnp.zeros(num_seeds, jnp.float32)
    bins = calibration.CalibrationBins(*(jnp.zeros((num_seeds, num_bins), jnp.float32) for _ in range(3)))
    totals = EvaluationSums(counts, counts, sums, bins, *((sums, bins) if num_passes else ()))
    sample_ids = jnp.arange(images.shape[axis], dtype=jnp.uint32)
    chunks = (_chunk_major(images, axis, chunk_size), _chunk_major(labels, axis, chunk_size),
              _chunk_major(sample_ids, 0, chunk_size))
    totals, _ = jax.lax.scan(add_chunk, totals, chunks)
    return totals


@functools.partial(jax.jit, static_argnames=("apply_fn", "shared_images", "seed_axis", "chunk_size"))
def seeds_predictions(apply_fn, params, images, shared_images: bool, seed_axis: str, chunk_size: int):
    """Each seed's deterministic network's classes (argmax of the logits) over a whole padded set, `chunk_size`
    samples at a time in one program: images [M, ...] ([R, M, ...] unless shared), M a multiple of chunk_size
    -> [R, M] int32."""
    axis = 0 if shared_images else 1

    def predict_chunk(_, chunk_images):
        predict = lambda p, x: apply_fn(p, x).argmax(axis=-1).astype(jnp.int32)  # noqa: E731
        return None, per_seed(predict, seed_axis, (True, not shared_images), params, chunk_images)  # [R, B]

    _, predicted = jax.lax.scan(predict_chunk, None, _chunk_major(images, axis, chunk_size))  # [M / B, R, B]
    return jnp.moveaxis(predicted, 0, 1).reshape(predicted.shape[1], -1)


# ------------------------------------------------------------------------------ host loops over devices
def stack(trees):
    """Per-seed pytrees of one structure -> one pytree with a leading seed axis (static fields of the first)."""
    leaves = [jax.tree_util.tree_leaves(tree) for tree in trees]
    stacked = [jnp.stack(seed_leaves) for seed_leaves in zip(*leaves)]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(trees[0]), stacked)


def unstack(tree, r: int):
    return jax.tree_util.tree_map(lambda x: x[r], tree)


def pool_stats(apply_fn, params, images, keys, num_passes: int, chunk_size: int, shared: bool, seed_axis: str,
               mesh=None, first_id: int = 0, score_fn=None, dropout: bool = True,
               pool_ids: Optional[np.ndarray] = None) -> uncertainty.UncertaintyStats:
    """MC-dropout scores of every seed's pool in fixed-size zero-padded chunks: images [N, ...] if `shared`, else
    [R, N, ...] -> numpy fields [R, N, ...]. pool_ids [R, N] (not shared): the rows are those pool samples of each
    seed (a subset, config.pool_subset), and row i's masks come from fold_in(key_r, pool_ids[r, i]) instead.

    `images` is anything with `.shape` whose slices give arrays: a device array, a numpy array, an `np.memmap`
    or a lazy pool that makes images on demand. Sample i's masks come from fold_in(key_r, first_id + i) (a
    process's shard of the pool starts at its `first_id`), whatever the
    chunk. Chunk i + 1 is dispatched before chunk i's scores are copied to the host, so memory stays
    O(chunk_size * T) plus the O(R * N * C) scores. With a `mesh` (see `uncertainty.pool_mesh`) every device
    takes `chunk_size` samples of each chunk: the scores are bitwise those of one device. `score_fn`: a score of
    the user's (`uncertainty.chunk_stats`). dropout False (config.pool_dropout): the deterministic network's softmax,
    one pass (num_passes 1), instead of MC dropout.
    """
    axis = 0 if shared else 1
    num_samples = images.shape[axis]
    if num_samples == 0:
        raise ValueError("pool_stats got an empty pool: there is nothing to run MC-dropout inference on.")
    if mesh is not None:
        chunk_size *= mesh.size
        spec = PartitionSpec(uncertainty.POOL_AXIS) if shared else PartitionSpec(None, uncertainty.POOL_AXIS)
        params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
    result, in_flight = None, None

    def collect(start, valid, scores):
        nonlocal result
        if result is None:
            result = uncertainty.UncertaintyStats(*(None if f is None else
                                                    np.empty((f.shape[0], num_samples, *f.shape[2:]), f.dtype)
                                                    for f in scores))
        for out, field in zip(result, scores):  # sliced on the host: a device slice would compile per `valid`
            if field is not None:
                out[:, start: start + valid] = np.asarray(field)[:, :valid]

    for start, chunk, valid in padded_chunks(images, chunk_size, axis):
        sample_ids = np.arange(first_id + start, first_id + start + chunk_size, dtype=np.uint32)
        if pool_ids is not None:  # [R, chunk_size]: the chunk's pool indices, padding rows 0 (their scores unread)
            sample_ids = np.zeros((len(pool_ids), chunk_size), np.uint32)
            sample_ids[:, :valid] = pool_ids[:, start: start + valid]
        if mesh is not None:
            chunk = jax.device_put(chunk, NamedSharding(mesh, spec))
            sample_ids = jax.device_put(sample_ids, NamedSharding(mesh, PartitionSpec(
                *([None] * (sample_ids.ndim - 1)), uncertainty.POOL_AXIS)))
        scores = seeds_chunk_stats(apply_fn, params, chunk, sample_ids, keys, num_passes=num_passes,
                                   shared_images=shared, seed_axis=seed_axis, score_fn=score_fn, dropout=dropout)
        if in_flight is not None:
            collect(*in_flight)
        in_flight = (start, valid, scores)
    collect(*in_flight)
    return result


def accuracy_chunk(num_samples: int, chunk_size: int) -> int:
    """The chunk `seeds_accuracy` takes for a set of `num_samples`: `chunk_size`, or for a smaller set the power of
    two that holds it (at least MIN_ACCURACY_CHUNK), so that a growing ground truth compiles a handful of shapes
    and pads to less than twice its size."""
    return min(chunk_size, max(MIN_ACCURACY_CHUNK, 1 << (num_samples - 1).bit_length()))


def seeds_accuracy(apply_fn, params, images, labels, shared: bool, seed_axis: str, what: str = "test",
                   chunk_size: int = 2048) -> np.ndarray:
    """Accuracy in [0, 1] of each seed's deterministic network [R]: images [N, ...] with labels [N] if `shared`,
    else [R, N, ...] and [R, N], zero-padded to whole chunks of `accuracy_chunk(N, chunk_size)` samples (on the
    host for host arrays) and counted in one program (`seeds_correct`). FloatingPointError naming `what` (and the
    seed's index when R > 1) when the logits of a prediction hold NaN or Inf."""
    num_samples, chunk, images, labels = _padded_set(images, labels, shared, what, chunk_size)
    right, not_finite = (np.asarray(count) for count in seeds_correct(
        apply_fn, params, images, labels, shared_images=shared, seed_axis=seed_axis, chunk_size=chunk))
    _check_finite(not_finite, what, num_samples)
    return right / num_samples


def _padded_set(images, labels, shared: bool, what: str, chunk_size: int):
    """(N, the chunk `accuracy_chunk` takes, images and labels [..., N, ...] padded to whole chunks: images with
    zeros (on the host for host arrays), labels with -1) for an evaluation of images [N, ...] and labels [N]
    ([R, N, ...], [R, N] unless `shared`); ValueError for an empty set."""
    axis = 0 if shared else 1
    num_samples = images.shape[axis]
    if num_samples == 0:
        raise ValueError(f"there are no {what} samples to evaluate.")
    chunk = accuracy_chunk(num_samples, chunk_size)
    padded = -(-num_samples // chunk) * chunk
    labels = np.asarray(labels, np.int32)
    label_widths = [(0, 0)] * (labels.ndim - 1) + [(0, padded - num_samples)]
    return num_samples, chunk, pad_rows(images, padded, axis), np.pad(labels, label_widths, constant_values=-1)


def _check_finite(not_finite: np.ndarray, what: str, num_samples: int) -> None:
    """FloatingPointError naming `what` (and the seed's index when R > 1) where a seed's count [R] of predictions
    with NaN or Inf logits is not 0."""
    for r, count in enumerate(not_finite):
        if count:
            raise FloatingPointError(
                f"NaN or Inf in the {what} predictions ({int(count)} of {num_samples} samples"
                + (f", the seed at index {r})" if len(not_finite) > 1 else ")"))


def seeds_evaluate(apply_fn, params, images, labels, shared: bool, seed_axis: str, what: str = "test",
                   chunk_size: int = 2048, keys=None, num_passes: int = 0,
                   num_bins: int = calibration.NUM_BINS) -> EvaluationSums:
    """`seeds_accuracy`'s set, padding and NaN check, with calibration (`seeds_evaluation`): numpy EvaluationSums
    [R, ...] over the N real samples; right / N is `seeds_accuracy`'s accuracy. keys [R] and num_passes > 0 add
    the MC mean's sums."""
    num_samples, chunk, images, labels = _padded_set(images, labels, shared, what, chunk_size)
    sums = jax.tree_util.tree_map(np.asarray, seeds_evaluation(
        apply_fn, params, images, labels, keys, shared_images=shared, seed_axis=seed_axis, chunk_size=chunk,
        num_bins=num_bins, num_passes=num_passes))
    _check_finite(sums.not_finite, what, num_samples)
    return sums


def seeds_predict(apply_fn, params, images, shared: bool, seed_axis: str, chunk_size: int = 2048) -> np.ndarray:
    """Each seed's deterministic network's classes [R, S] (numpy) for images [S, ...] ([R, S, ...] unless
    `shared`), zero-padded to whole chunks of `accuracy_chunk(S, chunk_size)` samples (`seeds_predictions`)."""
    axis = 0 if shared else 1
    num_samples = images.shape[axis]
    if num_samples == 0:
        raise ValueError("there are no samples to predict.")
    chunk = accuracy_chunk(num_samples, chunk_size)
    padded = -(-num_samples // chunk) * chunk
    predicted = seeds_predictions(apply_fn, params, pad_rows(images, padded, axis), shared_images=shared,
                                  seed_axis=seed_axis, chunk_size=chunk)
    return np.asarray(predicted)[:, :num_samples]


def train_epoch(states, images, targets, plans, batch_size: int, shared: bool, seed_axis: str, labeled=None,
                augment_degrees: float = 0.0, augment_scale: float = 0.0, augment_shift: float = 0.0,
                steps_per_call: int = 1, augment_warp: str = "affine",
                strong_view: Optional[augment_lib.StrongView] = None):
    """Line 12: one epoch per seed over its plan [(indices [M_r], weights [M_r])], in batches of exactly
    `batch_size` (padded with weight 0): seed r takes ceil(M_r / batch_size) steps, then no-ops.

    The steps go to the device `steps_per_call` at a time (`seeds_train_steps`; the last few one at a time), so
    at most two programs compile, and the states equal those of steps taken one by one (under vmap the mean
    loss may differ in its last bits). With augment_degrees, augment_scale or augment_shift > 0, plan entries
    of ground-truth samples (labeled [R, N] bool) are warped; pseudo-labeled ones are not, unless a `strong_view`
    (consistency) gives them the strong view (`augment_lib.two_views`). Returns the states
    and per seed train.EpochMetrics (None for an empty plan); FloatingPointError (naming the seed index) when a
    loss is not finite.
    """
    augmenting = augment_lib.warps(augment_degrees, augment_scale, augment_shift)
    if (augmenting or strong_view is not None) and labeled is None:
        raise ValueError("augmentation tells ground truth from pseudo-labels: give train_epoch the `labeled` masks.")
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be at least 1, got {steps_per_call}.")
    steps = np.array([-(-len(indices) // batch_size) for indices, _ in plans])
    num_seeds, max_steps = len(plans), int(steps.max())
    indices = np.zeros((num_seeds, max_steps * batch_size), np.int32)
    weights = np.zeros((num_seeds, max_steps * batch_size), np.float32)
    augment = np.zeros((num_seeds, max_steps * batch_size), bool if strong_view is None else np.int32)
    for r, (plan_indices, plan_weights) in enumerate(plans):
        indices[r, : len(plan_indices)], weights[r, : len(plan_weights)] = plan_indices, plan_weights
        if strong_view is not None:  # each entry's view: the ground truth's augmentation (if any), else the strong
            ground_truth = np.asarray(labeled[r], bool)[plan_indices]
            augment[r, : len(plan_indices)] = np.where(ground_truth, augment_lib.WEAK if augmenting else
                                                       augment_lib.PLAIN, augment_lib.STRONG)
        elif augmenting:
            augment[r, : len(plan_indices)] = np.asarray(labeled[r], bool)[plan_indices]
    # Step-major: [S, R, B] and [S, R].
    batches = [a.reshape(num_seeds, max_steps, batch_size).swapaxes(0, 1) for a in (indices, weights, augment)]
    take_step = (np.arange(max_steps)[None, :] < steps[:, None]).T
    totals = train.StepMetrics.zeros(num_seeds)  # summed on the device, per seed
    start = 0
    while start < max_steps:
        calls = slice(start, start + (steps_per_call if max_steps - start >= steps_per_call else 1))
        states, totals = seeds_train_steps(states, totals, images, targets, *(a[calls] for a in batches),
                                           take_step[calls], shared_images=shared, seed_axis=seed_axis,
                                           augment_degrees=augment_degrees, augment_scale=augment_scale,
                                           augment_shift=augment_shift, augment_warp=augment_warp,
                                           strong_view=strong_view)
        start = calls.stop
    if max_steps == 0:
        return states, [None] * num_seeds
    total_loss, total_correct, total_count = (np.asarray(x) for x in totals)
    results = []
    for r in range(num_seeds):
        if steps[r] == 0:
            results.append(None)
            continue
        loss = float(total_loss[r]) / int(steps[r])
        if not np.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss}"
                                     + (f" for the seed at index {r}." if num_seeds > 1 else "."))
        results.append(train.EpochMetrics(loss, float(total_correct[r]) / float(total_count[r]), int(steps[r])))
    return states, results


class Patience(NamedTuple):
    """The initial fit's stopping rule per seed: stop once training accuracy has not exceeded its best for
    `patience` epochs ("until the training accuracy stagnates", section 4); patience 0: never."""

    best: float = -1.0
    since_best: int = 0

    def update(self, accuracy: float) -> "Patience":
        return Patience(accuracy, 0) if accuracy > self.best else Patience(self.best, self.since_best + 1)

    def stop(self, patience: int) -> bool:
        return bool(patience) and self.since_best >= patience


def fit_on(patience: list[Patience], epochs: list, limit: int) -> tuple[list[Patience], list[bool]]:
    """After an epoch of the initial fit: each seed's Patience and whether it trains on (epochs[r]: seed r's epoch
    metrics, None for a seed that had stopped)."""
    patience = [p if epoch is None else p.update(epoch.accuracy) for p, epoch in zip(patience, epochs)]
    return patience, [not p.stop(limit) for p in patience]
