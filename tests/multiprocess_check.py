"""Run as `python -m tests.multiprocess_check PORT COUNT ID OUT` in COUNT processes: checks the pieces of a
several-process run against one process, every process computing the one-process answer too. Process 0 writes
what it found to OUT (JSON); tests/multiprocess_test.py reads it."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from deepbass_jax import algorithm, config as config_lib, models, train
from deepbass_jax.parallel import collective, data_parallel, distributed


def main(port: str, count: str, index: str, out: str) -> None:
    topology = distributed.initialize(f"127.0.0.1:{port}", int(count), int(index))
    config = config_lib.default_config()
    config.train.batch_size = 64
    module = models.build(config.model, 10)
    apply_fn = models.make_apply(module)
    images = np.random.default_rng(0).uniform(size=(203, 8, 8, 1)).astype(np.float32)  # 203: uneven shards
    state = algorithm.initial_train_state(module, apply_fn, jax.random.key(0), (8, 8, 1), config.train)
    lo, hi = topology.shard(len(images))
    keys = jnp.stack([jax.random.key(1)])
    # MC-dropout scores: each process its shard, gathered; one process: all at once.
    params = algorithm.stack([state]).params  # a seed axis of one
    alone = algorithm.pool_stats(apply_fn, params, images, keys, 10, 64, True, "map")
    local = algorithm.pool_stats(apply_fn, params, images[lo:hi], keys, 10, 64, True, "map", first_id=lo)
    gathered = collective.ProcessCollective(topology).gather_stats(local, len(images))  # as the driver gathers
    scores_bitwise = all(np.array_equal(g, a) for g, a in zip(gathered[:4], alone[:4])) and gathered.custom is None
    # Rows from their owners.
    wanted = np.array([202, 0, 101, 5, 5, 150])
    rows_right = bool(np.array_equal(distributed.gather_rows(images[lo:hi], len(images), wanted, topology),
                                     images[wanted]))
    # One epoch: data-parallel over the processes against one process.
    targets = np.arange(len(images)) % 10
    plan = train.sampling_plan(np.arange(len(images)) < 30, np.arange(len(images)) >= 30, jax.random.key(2), 3, 0.5)
    copy = jax.tree_util.tree_map(jnp.copy, state)  # the epochs donate their state
    parallel, parallel_metrics = data_parallel.train_epoch(copy, images[lo:hi], len(images), targets, plan, 64,
                                                           topology)
    single, single_metrics = algorithm.train_epoch(algorithm.stack([state]), jnp.asarray(images),
                                                   jnp.asarray(targets)[None], [plan], 64, True, "map")
    single = algorithm.unstack(single, 0)
    differences = [float(np.max(np.abs(np.asarray(p) - np.asarray(s))) / (np.max(np.abs(np.asarray(s))) + 1e-12))
                   for p, s in zip(jax.tree_util.tree_leaves(parallel.params), jax.tree_util.tree_leaves(single.params))]
    if topology.leader:
        with open(out, "w") as handle:
            json.dump({"count": topology.count, "scores_bitwise": scores_bitwise, "rows_right": rows_right,
                       "steps": [parallel_metrics.steps, single_metrics[0].steps],
                       "loss": [parallel_metrics.loss, single_metrics[0].loss],
                       "accuracy": [parallel_metrics.accuracy, single_metrics[0].accuracy],
                       "largest_relative_param_difference": max(differences)}, handle)


if __name__ == "__main__":
    main(*sys.argv[1:])
