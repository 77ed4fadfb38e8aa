"""What the processes of one run exchange, behind one object: `Collective` for a process alone (every exchange
gives back what it was given, and line 12 runs all seeds on this process's devices), `ProcessCollective` for
several processes joined by `jax.distributed` (see `distributed`).

The driver calls the same methods in both cases, at the same points on every process, so it has no branch on the
number of processes. Process 0 (`leader`) alone owns the oracle and the run folder; the others learn from it.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from deepbass_jax import algorithm
from deepbass_jax import augment as augment_lib
from deepbass_jax.parallel import data_parallel, distributed


class Collective:
    """One process: nothing to exchange."""

    def __init__(self, topology: distributed.Topology = distributed.Topology()):
        self.topology = topology

    @property
    def count(self) -> int:
        return self.topology.count

    @property
    def index(self) -> int:
        return self.topology.index

    @property
    def leader(self) -> bool:
        """Process 0: the oracle, the run folder, the checkpoint and the logs are its alone."""
        return self.topology.leader

    def shard(self, num_samples: int) -> tuple[int, int]:
        """[lo, hi): the part of the pool this process holds and scores."""
        return self.topology.shard(num_samples)

    def agreed(self, answer: bool) -> bool:
        """Process 0's `answer` on every process (a decision all of them take together)."""
        return answer

    def broadcast(self, tree):
        """Process 0's `tree` (numpy arrays) on every process."""
        return tree

    def from_leader(self, values: np.ndarray, most: int) -> np.ndarray:
        """Process 0's 1-D `values` (at most `most` entries, each >= 0) on every process."""
        return values

    def gather_shards(self, local: np.ndarray, num_samples: int) -> np.ndarray:
        """The whole [num_samples, ...] from each process's shard `local` [hi - lo, ...]."""
        return local

    def gather_stats(self, stats, num_samples: int):
        """The pool's MC-dropout statistics (fields [R, hi - lo, ...], each process its shard) -> [R, N, ...]."""
        return stats

    def keep_shard(self, dataset, pool_images):
        """What this process keeps of a seed's data set: all of it alone, only its pool shard `pool_images` with
        several processes (a validation set is refused there)."""
        return dataset

    def rows(self, local: np.ndarray, num_samples: int, indices) -> np.ndarray:
        """Rows `indices` [n] (pool positions) of the pool sharded as `shard` says -> [n, ...] on every process."""
        return np.asarray(local[np.asarray(indices, np.int64)])

    def value_range(self, local: np.ndarray) -> tuple[float, float]:
        """(low, high) of the pool's values over every process: one contrast for every sample shown to a person."""
        low, high = self._extremes(float(local.min()), float(local.max()))
        return (low, high) if high > low else (low, low + 1.0)

    def _extremes(self, low: float, high: float) -> tuple[float, float]:
        return low, high

    def settle(self, failure: Optional[BaseException], pending: type) -> None:
        """Raises process 0's `failure` (an oracle that failed or, of kind `pending`, waits for a person) on every
        process, so that all of them stop together."""
        if failure is not None:
            raise failure

    def restored(self, restored, fresh_states, num_pool: int):
        """Process 0's `workdir.runfolder.restore_run` result (or None) on every process; the others pass
        `fresh_states` and the pool size for the shapes."""
        return restored

    def train_epoch(self, states, pool_images, num_pool: int, targets, plans, train_config, shared: bool,
                    seed_axis: str, labeled):
        """Line 12: one epoch per seed over its plan (`algorithm.train_epoch`); -> (states, per-seed metrics)."""
        return algorithm.train_epoch(states, pool_images, targets, plans, train_config.batch_size, shared, seed_axis,
                                     labeled, train_config.augment_degrees, train_config.augment_scale,
                                     train_config.augment_shift, train_config.steps_per_call,
                                     train_config.augment_warp, augment_lib.strong_view(train_config))


class ProcessCollective(Collective):
    """Several processes: JAX's collectives (gloo between CPU processes); a peer that died raises
    `distributed.ProcessLost`."""

    def agreed(self, answer: bool) -> bool:
        return bool(distributed.broadcast(np.array(answer)))

    def broadcast(self, tree):
        return distributed.broadcast(tree)

    def from_leader(self, values: np.ndarray, most: int) -> np.ndarray:
        padded = np.full(most, -1, values.dtype)
        if self.leader:
            padded[: len(values)] = values
        padded = distributed.broadcast(padded)
        return padded[padded >= 0]

    def gather_shards(self, local: np.ndarray, num_samples: int) -> np.ndarray:
        return distributed.gather_shards(local, num_samples, self.topology)

    def gather_stats(self, stats, num_samples: int):
        return type(stats)(*(None if field is None else distributed.gather_shards(field[0], num_samples,
                                                                                   self.topology)[None]
                             for field in stats))

    def keep_shard(self, dataset, pool_images):
        logging.info("Process %d of %d: pool samples %s.", self.index, self.count, pool_images.shape[0])
        return dataclasses.replace(dataset, train_images=pool_images, train_labels=None, ids=None, files=None,
                                   given_labels=None)

    def rows(self, local: np.ndarray, num_samples: int, indices) -> np.ndarray:
        return distributed.gather_rows(np.asarray(local), num_samples, np.asarray(indices, np.int64), self.topology)

    def _extremes(self, low: float, high: float) -> tuple[float, float]:
        ranges = distributed.allgather(np.array([low, high], np.float64))
        return float(ranges[:, 0].min()), float(ranges[:, 1].max())

    def settle(self, failure: Optional[BaseException], pending: type) -> None:
        status = 0 if failure is None else 1 if isinstance(failure, pending) else 2
        status = int(distributed.broadcast(np.array(status, np.int32)))
        if failure is not None:
            raise failure
        if status == 1:
            raise pending("process 0 waits for labels (see its log); once they are in, start the same launch again "
                          "on every process.")
        if status:
            raise distributed.ProcessLost("process 0 stopped the run; see its log for why.")

    def restored(self, restored, fresh_states, num_pool: int):
        iteration = distributed.broadcast(np.array(-1 if restored is None else restored[0], np.int64))
        if iteration < 0:
            return None
        states, saved = restored[1:] if self.leader else (fresh_states, [{}])
        raw = states.replace(dropout_key=jax.random.key_data(states.dropout_key))
        raw = jax.tree_util.tree_map(jnp.asarray, distributed.broadcast(raw))
        labels = distributed.broadcast((saved[0]["ground_truth"], saved[0]["pseudo"]) if self.leader else
                                       (np.full(num_pool, -1, np.int32),) * 2)
        saved = [{"ground_truth": np.array(labels[0], np.int32), "pseudo": np.array(labels[1], np.int32),
                  "oracle": saved[0].get("oracle")}]
        return int(iteration), raw.replace(dropout_key=jax.random.wrap_key_data(raw.dropout_key)), saved

    def train_epoch(self, states, pool_images, num_pool: int, targets, plans, train_config, shared: bool,
                    seed_axis: str, labeled):
        """One seed, its batches split over the processes (`data_parallel.train_epoch`)."""
        state, epoch = data_parallel.train_epoch(algorithm.unstack(states, 0), pool_images, num_pool,
                                                 np.asarray(targets[0]), plans[0], train_config.batch_size,
                                                 self.topology)
        return algorithm.stack([state]), [epoch]


def current() -> Collective:
    """The collective of this process: several processes once `distributed.initialize` joined them."""
    topology = distributed.current()
    return ProcessCollective(topology) if topology.count > 1 else Collective(topology)
