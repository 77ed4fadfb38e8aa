"""Line 12 of Algorithm 3.1 over several processes: every step takes the global batch of a one-process run, each
process computes the gradient of its slice of rows, the gradients are summed, and every process applies the same
Adam update, so the parameters stay identical everywhere.

The batch rows come from the processes that hold them (`distributed.gather_rows`); process p's slice is rows
[p * B / P, (p + 1) * B / P), its hash dropout masks those rows of the whole batch's (`models` row_offset).
Against one process only the order of the sums differs: floats agree to round-off.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from deepbass_jax import distributed, losses, models, train


@functools.partial(jax.jit, static_argnames=("apply_fn", "l2_weight"))
def _slice_gradient(apply_fn, params, dropout_key, step, x, y, weights, num_valid, l2_weight: float):
    """Gradient of this slice's share of the batch loss: sum_i w_i CE_i / num_valid (+ the L2 term on one
    process): x [b, ...], y, weights [b]. -> (grads, loss share, correct, count)."""
    key = jax.random.fold_in(dropout_key, step)

    def loss_fn(p):
        logits = apply_fn(p, x, key)
        per_sample = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        share = jnp.sum(weights * per_sample) / num_valid
        return share + (losses.l2_penalty(p, l2_weight) if l2_weight else 0.0), logits

    (share, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    valid = weights > 0
    return grads, share, jnp.sum((logits.argmax(-1) == y) & valid), jnp.sum(valid)


@functools.partial(jax.jit, donate_argnums=0)
def _update(state: train.TrainState, grads) -> train.TrainState:
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state)


def train_epoch(state: train.TrainState, local_images, num_pool: int, targets: np.ndarray, plan, batch_size: int,
                topology: distributed.Topology):
    """One epoch over `plan` (indices [M] into the pool, weights [M]) in global batches of `batch_size` (padded
    with weight 0). local_images: this process's shard of the pool [hi - lo, ...]; targets [N]. -> (state,
    train.EpochMetrics or None for an empty plan)."""
    indices, weights = (np.asarray(a) for a in plan)
    if len(indices) == 0:
        return state, None
    rows = batch_size // topology.count
    first = topology.index * rows
    apply_fn = models.make_apply(state.apply_fn.module.clone(row_offset=first))
    l2_weight = state.l2_weight if topology.leader else 0.0
    steps = -(-len(indices) // batch_size)
    padded = steps * batch_size
    indices = np.pad(indices, (0, padded - len(indices)))
    weights = np.pad(weights, (0, padded - len(weights)))
    local_images = np.asarray(local_images)
    total_loss, correct, count = 0.0, 0, 0
    for s in range(steps):
        batch = slice(s * batch_size, (s + 1) * batch_size)
        x = distributed.gather_rows(local_images, num_pool, indices[batch], topology)
        mine = slice(first, first + rows)
        batch_weights = weights[batch]
        num_valid = np.float32(max(int(np.sum(batch_weights > 0)), 1))
        part = _slice_gradient(apply_fn, state.params, state.dropout_key, state.step, x[mine],
                               targets[indices[batch]][mine], batch_weights[mine], num_valid, l2_weight)
        grads, share, right, valid = jax.tree_util.tree_map(lambda a: a.sum(axis=0), distributed.allgather(part))
        state = _update(state, grads)
        total_loss += float(share)
        correct += int(right)
        count += int(valid)
    loss = total_loss / steps
    if not np.isfinite(loss):
        raise FloatingPointError(f"training loss became {loss}.")
    return state, train.EpochMetrics(loss, correct / max(count, 1), steps)
