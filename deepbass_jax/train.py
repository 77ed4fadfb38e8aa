"""Training: the jit-compiled step and sampling plans; `algorithm.train_epoch` runs the epochs.

Line 12 of Algorithm 3.1 trains one epoch on D = ground truth repeated `upsample` times (section 4,
"intentional overfitting") plus the pseudo-labeled samples, each at most once. Sets are boolean masks
over a fixed pool; a plan is a shuffled array of pool indices with per-entry loss weights (eq. 6).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from deepbass_jax import augment as augment_lib
from deepbass_jax import losses
from deepbass_jax.models import ApplyFn


def default_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.learning_rate = 1e-3  # Adam with Keras/optax default settings
    config.batch_size = 256  # mini-batch size of the paper
    config.l2_weight = 1e-3  # Keras l2(1e-3) on every kernel: lambda * sum w^2
    config.upsample = 20  # each ground-truth sample appears this often in D per epoch
    config.pseudo_weight = 1.0  # mu of eq. 6, the loss weight of a pseudo-labeled sample
    # Lee (2013)'s Pseudo-Label (beyond the paper; off by default): where a trained pseudo-label comes from, and a ramp
    # of mu over the iterations (his alpha(t), eq. 16 there; losses.ramp).
    config.pseudo_targets = "iteration"  # a name in PSEUDO_TARGETS: "iteration": eq. 4's label of the MC mean, fixed
    # for the epoch (the paper); "step": the deterministic network's argmax on the clean batch, recomputed in every
    # step with that step's parameters (Lee: "recalculated every weights update")
    config.pseudo_ramp_start = 0  # mu is 0 in iterations before this one (Lee's T1) ...
    config.pseudo_ramp_end = 0  # ... rises linearly to pseudo_weight in this one (Lee's T2); 0 and 0: no ramp
    # False: mu weighs each pseudo-labeled sample (eq. 6); True: mu weighs the pseudo-labeled part of an epoch as a
    # whole against its ground truth (Lee's eq. 15: alpha times the mean over pseudo-labels beside the mean over
    # labels), so each pseudo-labeled sample weighs mu * (upsample * |labeled|) / |pseudo-labeled|
    config.pseudo_balance = False
    # Ground-truth augmentation (section 5, "Data Augmentation"); pseudo-labeled samples are never warped.
    config.augment_degrees = 0.0  # max rotation in degrees, U(-a, a) per sample (0 = off; paper: below 10)
    config.augment_scale = 0.0  # max relative scaling of height and width, each U(1-s, 1+s) (paper: 0.05)
    config.augment_shift = 0.0  # max shift, a fraction of height / width, each U(-s, s) (paper: none; authors: 0.05)
    config.augment_warp = "affine"  # a name in augment.WARPS: the function that warps (augment.register_warp adds one)
    # Consistency (beyond the paper; off by default): every pseudo-labeled sample is trained on a strongly augmented
    # view, its pseudo-label taken from the MC mean of the clean image (FixMatch's weak/strong idea). Affine warp
    # (rotation, scaling, shift) with these maxima, then cutout; ground-truth samples keep the augment_* view.
    config.strong_augment = False
    config.strong_degrees = 25.0  # max rotation in degrees of the strong view
    config.strong_scale = 0.2  # max relative scaling of height and width of the strong view
    config.strong_shift = 0.125  # max shift of the strong view, a fraction of height / width
    config.strong_cutout = 0.3  # side of the square cutout zeroes, a fraction of the image side (0: no cutout)
    # Steps sent to the device as one program (lax.scan): fewer dispatches; the trained networks are the same
    # for any value (under seed_axis vmap the logged training loss may differ in its last bits). Runs over
    # several processes exchange gradients every step and take them one at a time.
    config.steps_per_call = 16
    # False: batches of batch_size in plan order, the last one holding the rest (Keras's fit: 130 samples give 128
    # and 2). True: the same number of batches, their sizes differing by at most one (65 and 65; `even_batches`).
    config.even_batches = False
    return config


class TrainState(flax.struct.PyTreeNode):
    """Everything a training step changes, as one pytree (donated to the step)."""

    step: jax.Array  # int32 scalar: number of steps taken
    params: Any
    opt_state: Any
    dropout_key: jax.Array  # base key; step s uses fold_in(dropout_key, s)
    apply_fn: ApplyFn = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    l2_weight: float = flax.struct.field(pytree_node=False, default=1e-3)
    pseudo_targets: str = flax.struct.field(pytree_node=False, default="iteration")  # a name in PSEUDO_TARGETS

    def apply_gradients(self, grads) -> "TrainState":
        """One Adam update with `grads` (flax's TrainState.apply_gradients): the step count goes up by one."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates), opt_state=opt_state)


@functools.lru_cache(maxsize=None)
def adam(learning_rate: float) -> optax.GradientTransformation:
    """optax.adam, one object per learning rate: TrainState holds it as a static field, so a fresh (unequal)
    optimizer per run would make the training step compile again for every run."""
    return optax.adam(learning_rate)


def create_train_state(
    apply_fn: ApplyFn, params, dropout_key: jax.Array, config: ml_collections.ConfigDict
) -> TrainState:
    tx = adam(config.learning_rate)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        dropout_key=dropout_key,
        apply_fn=apply_fn,
        tx=tx,
        l2_weight=config.l2_weight,
        pseudo_targets=config.pseudo_targets,
    )


class StepMetrics(NamedTuple):
    loss: jax.Array  # cross-entropy + L2 of the batch
    correct: jax.Array  # number of weighted samples predicted right
    count: jax.Array  # number of samples with weight > 0

    @classmethod
    def zeros(cls, shape=()) -> "StepMetrics":
        """The sums of no steps (with the dtypes of a step's metrics), e.g. shape [R] for R seeds."""
        return cls(jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.int32), jnp.zeros(shape, jnp.int32))


def given_targets(apply_fn: ApplyFn, params, x: jax.Array, y: jax.Array) -> jax.Array:
    """config.train.pseudo_targets = "iteration": the labels y [B] as the plan's targets hold them (the pseudo-label
    of eq. 4, fixed for the epoch); computes nothing."""
    del apply_fn, params, x
    return y


def step_targets(apply_fn: ApplyFn, params, x: jax.Array, y: jax.Array) -> jax.Array:
    """config.train.pseudo_targets = "step", Lee (2013): rows with y < 0 (pseudo-labeled samples, see
    `algorithm.RunState.targets`) take the class of maximum predicted probability of the deterministic network
    (no dropout) with the step's parameters `params` on x [B, ...], the clean batch; the others keep y [B].
    No gradient flows through these labels. Returns [B] in y's dtype."""
    logits = apply_fn(jax.lax.stop_gradient(params), x)
    return jnp.where(y < 0, logits.argmax(axis=-1).astype(y.dtype), y)


# config.train.pseudo_targets -> (apply_fn, params, clean batch [B, ...], labels [B]) -> the step's labels [B]
PSEUDO_TARGETS = {"iteration": given_targets, "step": step_targets}


def pseudo_weight_at(train_config: ml_collections.ConfigDict, iteration: int) -> float:
    """mu of eq. 6 in iteration t of Algorithm 3.1: config.train.pseudo_weight times Lee's ramp
    `losses.ramp(t, pseudo_ramp_start, pseudo_ramp_end)` (exactly pseudo_weight without a ramp)."""
    return train_config.pseudo_weight * losses.ramp(iteration, train_config.pseudo_ramp_start,
                                                    train_config.pseudo_ramp_end)


AUGMENT_STREAM = 0x61756721  # fold_in data that separates a step's augmentation key from its dropout key


def augment_key(dropout_key: jax.Array, step: jax.Array) -> jax.Array:
    """The augmentation key of step `step`: fold_in(fold_in(dropout_key, step), AUGMENT_STREAM), a function of
    the train state alone, so a resumed run warps its batches exactly as an uninterrupted one."""
    return jax.random.fold_in(jax.random.fold_in(dropout_key, step), AUGMENT_STREAM)


@functools.partial(jax.jit, static_argnames=("augment_degrees", "augment_scale", "augment_shift", "augment_warp",
                                              "strong"))
def gather_batch(images: jax.Array, targets: jax.Array, batch_indices: jax.Array, augment=None, dropout_key=None,
                  step=None, augment_degrees: float = 0.0, augment_scale: float = 0.0, augment_shift: float = 0.0,
                  augment_warp: str = "affine", strong: Optional[augment_lib.StrongView] = None):
    """images[batch_indices], targets[batch_indices]; with `augment` [B] bool, the rows marked True are warped
    by `augment_lib.random_affine_where` (warp `augment_warp`) with key `augment_key(dropout_key, step)`. With a
    `strong` view, `augment` holds each row's view [B] (`augment_lib.two_views`: plain, weak or strong)."""
    x, y = images[batch_indices], targets[batch_indices]
    if strong is not None:
        x = augment_lib.two_views(x, augment, augment_key(dropout_key, step), augment_degrees, augment_scale,
                                  augment_shift, strong)
    elif augment is not None:
        x = augment_lib.random_affine_where(x, augment, augment_key(dropout_key, step), augment_degrees,
                                            augment_scale, augment_shift, augment_warp)
    return x, y


def train_step(
    state: TrainState,
    images: jax.Array,
    targets: jax.Array,
    batch_indices: jax.Array,
    batch_weights: jax.Array,
    augment: Optional[jax.Array] = None,
    augment_degrees: float = 0.0,
    augment_scale: float = 0.0,
    augment_shift: float = 0.0,
    augment_warp: str = "affine",
    strong: Optional[augment_lib.StrongView] = None,
) -> tuple[TrainState, StepMetrics]:
    """One Adam step on the batch images[batch_indices] with labels targets[batch_indices].

    images [N, ...] and targets [N] are the whole pool (gathered on device); batch_indices [B] int32,
    batch_weights [B] float32 (0 marks padding). Called alone, the gather and `batch_step` are two programs;
    `algorithm.seeds_train_step` traces both into one. augment [B] bool (images [N, H, W, C] only) marks the
    rows to warp by a random rotation of up to `augment_degrees`, scaling of up to `augment_scale` and shift of up
    to `augment_shift` (static floats, config.train's fields of those names) with warp `augment_warp`; None or all 0:
    no augmentation. With a `strong` view (consistency), augment [B] int holds each row's view instead
    (`augment_lib.two_views`). With state.pseudo_targets "step", targets of -1 mark the rows whose label the step
    computes from the clean (unwarped) images (`step_targets`).
    """
    if augment is None or not (strong or augment_lib.warps(augment_degrees, augment_scale, augment_shift)):
        x, y = gather_batch(images, targets, batch_indices)
        return batch_step(state, x, y, batch_weights)
    x, y = gather_batch(images, targets, batch_indices, augment, state.dropout_key, state.step,
                         augment_degrees=augment_degrees, augment_scale=augment_scale,
                         augment_shift=augment_shift, augment_warp=augment_warp, strong=strong)
    if PSEUDO_TARGETS[state.pseudo_targets] is given_targets:  # the labels need no images
        return batch_step(state, x, y, batch_weights)
    return batch_step(state, x, y, batch_weights, gather_batch(images, targets, batch_indices)[0])


def gradients(state: TrainState, x: jax.Array, y: jax.Array, batch_weights: jax.Array, num_valid=None,
              l2_weight: Optional[float] = None, clean_x: Optional[jax.Array] = None):
    """Line 12's loss (eq. 6, `losses.cross_entropy`, plus `losses.l2_penalty`) and its gradient on images x [B, ...]
    with labels y [B] and loss weights [B] (0 marks padding) -> (grads, StepMetrics).

    Dropout key: fold_in(state.dropout_key, state.step). A data-parallel process passes its slice of the batch
    with the whole batch's `num_valid`, and `l2_weight` 0 on every process but one, so that the processes'
    gradients sum to the one-process gradient. The labels first go through PSEUDO_TARGETS[state.pseudo_targets]
    on clean_x [B, ...], the batch before augmentation (None: x is clean).
    """
    key = jax.random.fold_in(state.dropout_key, state.step)
    l2_weight = state.l2_weight if l2_weight is None else l2_weight
    y = PSEUDO_TARGETS[state.pseudo_targets](state.apply_fn, state.params, x if clean_x is None else clean_x, y)

    def loss_fn(params):
        logits = state.apply_fn(params, x, key)
        loss = losses.cross_entropy(logits, y, batch_weights, num_valid)
        if l2_weight:
            loss = loss + losses.l2_penalty(params, l2_weight)
        return loss, logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    valid = batch_weights > 0
    return grads, StepMetrics(loss=loss, correct=jnp.sum((logits.argmax(-1) == y) & valid), count=jnp.sum(valid))


@functools.partial(jax.jit, donate_argnums=0)
def batch_step(
    state: TrainState, x: jax.Array, y: jax.Array, batch_weights: jax.Array, clean_x: Optional[jax.Array] = None
) -> tuple[TrainState, StepMetrics]:
    """One Adam step (line 12) on images x [B, ...] with labels y [B] and loss weights [B] (0 marks padding);
    clean_x [B, ...]: x before augmentation, for "step" pseudo-labels (None: x is clean)."""
    grads, metrics = gradients(state, x, y, batch_weights, clean_x=clean_x)
    return state.apply_gradients(grads), metrics


def sampling_plan(
    labeled: np.ndarray,
    selected: np.ndarray,
    key: jax.Array,
    upsample: int = 20,
    pseudo_weight: float = 1.0,
    balance: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's shuffled pool indices and loss weights: each labeled sample `upsample` times (weight 1),
    each selected (pseudo-labeled) sample once (weight mu = `pseudo_weight`, eq. 6; with `balance`, mu times
    upsample * |labeled| / |selected|, so that the pseudo-labels weigh mu times the ground truth in all: Lee's
    eq. 15).

    labeled, selected: [N] bool masks, disjoint. Returns indices [M] int32 and weights [M] float32 with
    M = upsample * |labeled| + |selected|. Runs on the host: its size changes every iteration.
    """
    labeled = np.asarray(labeled, bool)
    selected = np.asarray(selected, bool)
    if np.any(labeled & selected):
        raise ValueError("a sample is both labeled and pseudo-labeled; ground truth must never be overwritten.")
    repeats = upsample * labeled.astype(np.int64) + selected.astype(np.int64)
    indices = np.repeat(np.arange(labeled.shape[0], dtype=np.int32), repeats)
    if balance and selected.any():
        pseudo_weight = pseudo_weight * upsample * labeled.sum() / selected.sum()
    weights = np.where(labeled[indices], 1.0, pseudo_weight).astype(np.float32)
    order = np.random.default_rng(np.asarray(jax.random.key_data(key)).tolist()).permutation(indices.shape[0])
    return indices[order], weights[order]


def even_batches(indices: np.ndarray, weights: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """An epoch plan (indices [M], weights [M]) spread over the same ceil(M / batch_size) batches with sizes that
    differ by at most one, each padded to batch_size with weight-0 entries (which the loss ignores) -> indices,
    weights [ceil(M / batch_size) * batch_size], the plan's order kept. Against a last batch of a few samples:
    a fresh paper CNN, 50 epochs on 130 labels, lost 16 points of test accuracy to batches of 128 and 2
    (studies/dbal_last_batch.py)."""
    steps = -(-len(indices) // batch_size)
    sizes = np.full(steps, len(indices) // max(steps, 1))
    sizes[: len(indices) - sizes.sum()] += 1
    filled = (np.arange(batch_size)[None, :] < sizes[:, None]).ravel()
    spread_indices, spread_weights = np.zeros(filled.shape, np.int32), np.zeros(filled.shape, np.float32)
    spread_indices[filled], spread_weights[filled] = indices, weights
    return spread_indices, spread_weights


class EpochMetrics(NamedTuple):
    loss: float  # mean batch loss
    accuracy: float  # training accuracy over the plan (pseudo-labels count as labels)
    steps: int
