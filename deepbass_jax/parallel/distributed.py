"""Several processes, one run: JAX's multi-controller runtime (`jax.distributed`) on GPU/TPU hosts or CPU processes.

Every process runs the same driver on a contiguous shard of the pool (`Topology.shard`). What they exchange goes
through JAX's own collectives (gloo between CPU processes): the pool's MC-dropout scores, the images of the few
samples a phase needs whole (queries, ground truth, a training batch), the labels process 0 gets from the oracle,
and the gradients of a data-parallel training step. Process 0 alone owns the oracle and the run folder.

A collective whose peer died raises `ProcessLost`: the run stops everywhere, and the same launch on every host
resumes it from process 0's last checkpoint.
"""

from __future__ import annotations

import dataclasses
import socket
from typing import Optional

import jax
import numpy as np

HEARTBEAT_SECONDS = 30  # a process silent this long is declared dead by the coordinator


class ProcessLost(RuntimeError):
    """Another process of the run died or stopped; this one cannot go on alone."""


@dataclasses.dataclass(frozen=True)
class Topology:
    """This process's place in the run: `index` of `count` processes (0 of 1 when run alone)."""

    index: int = 0
    count: int = 1

    @property
    def leader(self) -> bool:
        """Process 0: the oracle, the run folder, the checkpoint and the logs are its alone."""
        return self.index == 0

    def shard(self, num_samples: int, index: Optional[int] = None) -> tuple[int, int]:
        """[lo, hi): the contiguous part of range(num_samples) that process `index` (default: this one) holds."""
        index = self.index if index is None else index
        return num_samples * index // self.count, num_samples * (index + 1) // self.count


def free_local_port() -> int:
    """A TCP port free on 127.0.0.1 now, for the coordinator of processes launched on this machine."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> Topology:
    """Joins the run's processes: explicit (coordinator host:port, process count and this process's id, the
    same coordinator on every host) or, with no arguments, from the cluster environment (SLURM, ...), as
    `jax.distributed.initialize` detects it. CPU processes talk through gloo."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, heartbeat_timeout_seconds=HEARTBEAT_SECONDS)
    return current()


def current() -> Topology:
    return Topology(jax.process_index(), jax.process_count())


def _collective(function, *args):
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

    try:
        return getattr(multihost_utils, function)(*args)
    except Exception as error:  # gloo: "Connection reset by peer", "Connection closed", ...
        if "gloo" in str(error).lower() or "connection" in str(error).lower():
            raise ProcessLost(f"another process of the run is gone ({str(error).splitlines()[0]})") from error
        raise


def allgather(tree):
    """Every process's `tree` (numpy arrays of equal shapes everywhere), stacked: leaves [P, ...] as numpy."""
    return jax.tree_util.tree_map(np.asarray, _collective("process_allgather", tree))


def broadcast(tree):
    """Process 0's `tree` on every process (the others pass arrays of the same shapes, their values unused)."""
    return jax.tree_util.tree_map(np.asarray, _collective("broadcast_one_to_all", tree))


def gather_shards(local: np.ndarray, num_samples: int, topology: Topology) -> np.ndarray:
    """The whole [num_samples, ...] from each process's contiguous shard `local` [hi - lo, ...] (see `shard`)."""
    largest = max(hi - lo for lo, hi in (topology.shard(num_samples, p) for p in range(topology.count)))
    padded = np.zeros((largest, *local.shape[1:]), local.dtype)
    padded[: len(local)] = local
    stacked = allgather(padded)
    return np.concatenate([stacked[p, : hi - lo] for p, (lo, hi) in
                           enumerate(topology.shard(num_samples, p) for p in range(topology.count))])


def gather_rows(local: np.ndarray, num_samples: int, indices: np.ndarray, topology: Topology) -> np.ndarray:
    """Rows `indices` [n] (global) of the [num_samples, ...] array sharded over the processes as `shard` says,
    this process holding `local`: each contributes the rows it owns and every row is taken from its owner.
    -> [n, ...] on every process."""
    indices = np.asarray(indices, np.int64)
    lo, hi = topology.shard(num_samples)
    mine = (indices >= lo) & (indices < hi)
    rows = np.zeros((len(indices), *local.shape[1:]), local.dtype)
    rows[mine] = local[indices[mine] - lo]
    if topology.count == 1:
        return rows
    starts = np.array([topology.shard(num_samples, p)[0] for p in range(topology.count)])
    owner = np.searchsorted(starts, indices, side="right") - 1
    return allgather(rows)[owner, np.arange(len(indices))]
