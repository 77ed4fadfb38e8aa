"""Training: the jit-compiled step, epochs over a sampling plan with a static batch shape, evaluation.

Line 12 of Algorithm 3.1 trains one epoch on D = ground truth repeated `upsample` times (section 4,
"intentional overfitting") plus the pseudo-labeled samples, each at most once. Sets are boolean masks
over a fixed pool; a plan is a shuffled array of pool indices with per-entry loss weights (eq. 6).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from deepbass_jax import augment as augment_lib
from deepbass_jax import losses
from deepbass_jax.chunks import padded_chunks
from deepbass_jax.models import ApplyFn


def default_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.learning_rate = 1e-3  # Adam with Keras/optax default settings
    config.batch_size = 256  # mini-batch size of the paper
    config.l2_weight = 1e-3  # Keras l2(1e-3) on every kernel: lambda * sum w^2
    config.upsample = 20  # each ground-truth sample appears this often in D per epoch
    config.pseudo_weight = 1.0  # mu of eq. 6, the loss weight of a pseudo-labeled sample
    # Ground-truth augmentation (section 5, "Data Augmentation"); pseudo-labeled samples are never warped.
    config.augment_degrees = 0.0  # max rotation in degrees, U(-a, a) per sample (0 = off; paper: below 10)
    config.augment_scale = 0.0  # max relative scaling of height and width, each U(1-s, 1+s) (paper: 0.05)
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


@functools.lru_cache(maxsize=None)
def adam(learning_rate: float) -> optax.GradientTransformation:
    """optax.adam, one object per learning rate: TrainState holds it as a static field, so a fresh (unequal)
    optimizer per run would make `batch_step` compile again for every run."""
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
    )


class StepMetrics(NamedTuple):
    loss: jax.Array  # cross-entropy + L2 of the batch
    correct: jax.Array  # number of weighted samples predicted right
    count: jax.Array  # number of samples with weight > 0


AUGMENT_STREAM = 0x61756721  # fold_in data that separates a step's augmentation key from its dropout key


def augment_key(dropout_key: jax.Array, step: jax.Array) -> jax.Array:
    """The augmentation key of step `step`: fold_in(fold_in(dropout_key, step), AUGMENT_STREAM), a function of
    the train state alone, so a resumed run warps its batches exactly as an uninterrupted one."""
    return jax.random.fold_in(jax.random.fold_in(dropout_key, step), AUGMENT_STREAM)


@functools.partial(jax.jit, static_argnames=("augment_degrees", "augment_scale"))
def _gather_batch(images: jax.Array, targets: jax.Array, batch_indices: jax.Array, augment=None, dropout_key=None,
                  step=None, augment_degrees: float = 0.0, augment_scale: float = 0.0):
    """images[batch_indices], targets[batch_indices]; with `augment` [B] bool, the rows marked True are warped
    by `augment_lib.random_affine_where` with key `augment_key(dropout_key, step)`."""
    x, y = images[batch_indices], targets[batch_indices]
    if augment is not None:
        x = augment_lib.random_affine_where(x, augment, augment_key(dropout_key, step), augment_degrees,
                                            augment_scale)
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
) -> tuple[TrainState, StepMetrics]:
    """One Adam step on the batch images[batch_indices] with labels targets[batch_indices].

    images [N, ...] and targets [N] are the whole pool (gathered on device); batch_indices [B] int32,
    batch_weights [B] float32 (0 marks padding). The gather is its own small program, so `batch_step`, the
    expensive one, compiles once whatever the pool size. augment [B] bool (images [N, H, W, C] only) marks the
    rows to warp by a random rotation of up to `augment_degrees` and scaling of up to `augment_scale` (static
    floats, config.train's fields of those names); None or both 0: no augmentation.
    """
    if augment is None or (augment_degrees == 0 and augment_scale == 0):
        x, y = _gather_batch(images, targets, batch_indices)
    else:
        x, y = _gather_batch(images, targets, batch_indices, augment, state.dropout_key, state.step,
                             augment_degrees=augment_degrees, augment_scale=augment_scale)
    return batch_step(state, x, y, batch_weights)


@functools.partial(jax.jit, donate_argnums=0)
def batch_step(
    state: TrainState, x: jax.Array, y: jax.Array, batch_weights: jax.Array
) -> tuple[TrainState, StepMetrics]:
    """One Adam step on images x [B, ...] with labels y [B] and loss weights [B] (0 marks padding).

    Dropout key: fold_in(state.dropout_key, state.step).
    """
    key = jax.random.fold_in(state.dropout_key, state.step)

    def loss_fn(params):
        logits = state.apply_fn(params, x, key)
        loss = losses.cross_entropy(logits, y, batch_weights) + losses.l2_penalty(params, state.l2_weight)
        return loss, logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    valid = batch_weights > 0
    metrics = StepMetrics(
        loss=loss,
        correct=jnp.sum((logits.argmax(-1) == y) & valid),
        count=jnp.sum(valid),
    )
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def sampling_plan(
    labeled: np.ndarray,
    selected: np.ndarray,
    key: jax.Array,
    upsample: int = 20,
    pseudo_weight: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's shuffled pool indices and loss weights: each labeled sample `upsample` times (weight 1),
    each selected (pseudo-labeled) sample once (weight mu = `pseudo_weight`, eq. 6).

    labeled, selected: [N] bool masks, disjoint. Returns indices [M] int32 and weights [M] float32 with
    M = upsample * |labeled| + |selected|. Runs on the host: its size changes every iteration.
    """
    labeled = np.asarray(labeled, bool)
    selected = np.asarray(selected, bool)
    if np.any(labeled & selected):
        raise ValueError("a sample is both labeled and pseudo-labeled; ground truth must never be overwritten.")
    repeats = upsample * labeled.astype(np.int64) + selected.astype(np.int64)
    indices = np.repeat(np.arange(labeled.shape[0], dtype=np.int32), repeats)
    weights = np.where(labeled[indices], 1.0, pseudo_weight).astype(np.float32)
    order = np.random.default_rng(np.asarray(jax.random.key_data(key)).tolist()).permutation(indices.shape[0])
    return indices[order], weights[order]


def _pad_to_multiple(indices: np.ndarray, weights: np.ndarray, batch_size: int):
    padding = -indices.shape[0] % batch_size
    return (
        np.concatenate([indices, np.zeros(padding, np.int32)]),
        np.concatenate([weights, np.zeros(padding, np.float32)]),
    )


class EpochMetrics(NamedTuple):
    loss: float  # mean batch loss
    accuracy: float  # training accuracy over the plan (pseudo-labels count as labels)
    steps: int


def train_epoch(
    state: TrainState,
    images: jax.Array,
    targets: jax.Array,
    indices: np.ndarray,
    weights: np.ndarray,
    batch_size: int = 256,
    labeled: Optional[np.ndarray] = None,
    augment_degrees: float = 0.0,
    augment_scale: float = 0.0,
) -> tuple[TrainState, EpochMetrics]:
    """One pass over a plan in batches of exactly `batch_size` (the last one padded with weight 0),
    so `train_step` compiles once whatever the plan's length.

    With augment_degrees or augment_scale > 0 (config.train's fields), the plan entries of ground-truth samples,
    labeled [N] bool over the pool, are warped (images [N, H, W, C]); pseudo-labeled entries are not."""
    if indices.shape[0] == 0:
        raise ValueError("the training plan is empty: label at least one sample before training.")
    augmenting = augment_degrees != 0 or augment_scale != 0
    if augmenting and labeled is None:
        raise ValueError("augmentation warps ground-truth samples only: give train_epoch the `labeled` mask [N].")
    augment = np.asarray(labeled, bool)[indices] if augmenting else np.zeros(indices.shape[0], bool)
    augment = np.concatenate([augment, np.zeros(-indices.shape[0] % batch_size, bool)])
    indices, weights = _pad_to_multiple(indices, weights, batch_size)
    batches = zip(indices.reshape(-1, batch_size), weights.reshape(-1, batch_size), augment.reshape(-1, batch_size))
    total_loss, total_correct, total_count, steps = 0.0, 0, 0, 0
    for batch_indices, batch_weights, batch_augment in batches:
        state, metrics = train_step(state, images, targets, batch_indices, batch_weights,
                                    batch_augment if augmenting else None, augment_degrees, augment_scale)
        # Accumulated on device: no host round trip per step.
        total_loss += metrics.loss
        total_correct += metrics.correct
        total_count += metrics.count
        steps += 1
    loss = float(total_loss) / steps
    if not np.isfinite(loss):
        raise FloatingPointError(f"training loss became {loss} at step {int(state.step)}.")
    return state, EpochMetrics(loss=loss, accuracy=float(total_correct) / float(total_count), steps=steps)


def fit(
    state: TrainState,
    images: jax.Array,
    targets: jax.Array,
    labeled: np.ndarray,
    key: jax.Array,
    epochs: int,
    config: ml_collections.ConfigDict,
    patience: int = 0,
    on_epoch: Optional[Callable[[int, EpochMetrics], None]] = None,
) -> tuple[TrainState, EpochMetrics]:
    """Supervised training (line 2 of Algorithm 3.1): up to `epochs` epochs over the upsampled ground truth.

    With `patience` > 0 training stops once the epoch's training accuracy has not exceeded its best for
    that many epochs ("until the training accuracy stagnates", section 4). config.augment_degrees /
    augment_scale > 0 warp every entry (all are ground truth).
    """
    no_selection = np.zeros_like(np.asarray(labeled, bool))
    best, since_best = -1.0, 0
    for epoch in range(epochs):
        indices, weights = sampling_plan(labeled, no_selection, jax.random.fold_in(key, epoch), config.upsample)
        state, metrics = train_epoch(state, images, targets, indices, weights, config.batch_size, labeled,
                                     config.augment_degrees, config.augment_scale)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        best, since_best = (metrics.accuracy, 0) if metrics.accuracy > best else (best, since_best + 1)
        if patience and since_best >= patience:
            break
    return state, metrics


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _predict_chunk(apply_fn: ApplyFn, params, images: jax.Array) -> jax.Array:
    return apply_fn(params, images).argmax(axis=-1)


def predict(apply_fn: ApplyFn, params, images, chunk_size: int = 2048) -> np.ndarray:
    """Deterministic (dropout off) class predictions [N] for images [N, ...], in padded fixed-size chunks."""
    predictions = []
    for _, chunk, valid in padded_chunks(images, chunk_size):
        predictions.append(_predict_chunk(apply_fn, params, chunk)[:valid])
    return np.asarray(jnp.concatenate(predictions))


def accuracy(apply_fn: ApplyFn, params, images, labels, chunk_size: int = 2048) -> float:
    """Test accuracy of the deterministic network, a float in [0, 1]."""
    return float(np.mean(predict(apply_fn, params, images, chunk_size) == np.asarray(labels)))
