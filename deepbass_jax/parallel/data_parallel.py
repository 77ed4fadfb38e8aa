"""Line 12 of Algorithm 3.1 over several processes: every step takes the global batch of a one-process run, each
process computes the gradient of its slice of rows, the gradients are summed, and every process applies the same
Adam update, so the parameters stay identical everywhere.

The batch rows come from the processes that hold them (`distributed.gather_rows`); process p's slice is rows
[p * B / P, (p + 1) * B / P), its hash dropout masks those rows of the whole batch's (`models` row_offset).
Against one process only the order of the sums differs: floats agree to round-off.
"""

from __future__ import annotations


import jax
import numpy as np

from deepbass_jax import models, train
from deepbass_jax.parallel import distributed

# Line 12's loss and gradient (`train.gradients`) on this process's slice, and the one update (flax's
# TrainState.apply_gradients) once the slices' gradients are summed.
_slice_gradients = jax.jit(train.gradients, static_argnames=("l2_weight",))
_apply_gradients = jax.jit(train.TrainState.apply_gradients, donate_argnums=0)


def train_epoch(state: train.TrainState, local_images, num_pool: int, targets: np.ndarray, plan, batch_size: int,
                topology: distributed.Topology):
    """One epoch over `plan` (indices [M] into the pool, weights [M]) in global batches of `batch_size` (padded
    with weight 0). local_images: this process's shard of the pool [hi - lo, ...]; targets [N]. -> (state,
    train.EpochMetrics or None for an empty plan). The L2 term is process 0's share of the summed gradient."""
    indices, weights = (np.asarray(a) for a in plan)
    if len(indices) == 0:
        return state, None
    rows = batch_size // topology.count
    first = topology.index * rows
    sliced_apply = models.make_apply(state.apply_fn.module.clone(row_offset=first))
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
        part = _slice_gradients(state.replace(apply_fn=sliced_apply), x[mine], targets[indices[batch]][mine],
                                batch_weights[mine], num_valid, l2_weight=l2_weight)
        grads, metrics = jax.tree_util.tree_map(lambda a: a.sum(axis=0), distributed.allgather(part))
        state = _apply_gradients(state, grads)
        total_loss += float(metrics.loss)
        correct += int(metrics.correct)
        count += int(metrics.count)
    loss = total_loss / steps
    if not np.isfinite(loss):
        raise FloatingPointError(f"training loss became {loss}.")
    return state, train.EpochMetrics(loss, correct / max(count, 1), steps)
