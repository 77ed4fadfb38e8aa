"""The seeds of a run, built before any work: each one's data, pool, label ledger and state, after stage 2 of the
config's validation (`config.validate_run`). With several processes each keeps only its shard of the pool."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Optional

import jax
import ml_collections
import numpy as np

from deepbass_jax import algorithm, config as config_lib, data, oracle as oracle_lib
from deepbass_jax.algorithm import RunState
from deepbass_jax.oracle.ledger import Ledger
from deepbass_jax.workdir import runfolder
from deepbass_jax.workdir.runfolder import SUMMARY


class RunFinished(Exception):
    """The workdir holds a finished run; it is not run again."""


@dataclasses.dataclass
class Seed:
    """One seed's run: its data, pool, labels and state (the train state lives stacked in the driver)."""

    config: ml_collections.ConfigDict  # config.seed = this seed
    key: jax.Array
    folder: pathlib.Path
    dataset: data.Dataset  # test set cut to config.test_size
    val_indices: np.ndarray
    pool_indices: np.ndarray
    pool_ids: np.ndarray  # [N] int64: each pool sample's row in the user's file (queries, logs and exports use it)
    pool_images: np.ndarray  # [N, ...]; with several processes only this process's shard [hi - lo, ...]
    hidden_labels: Optional[np.ndarray]  # [N], for metrics only: the driver learns labels through the ledger
    ledger: Ledger
    state: RunState



def make_seeds(config: ml_collections.ConfigDict, workdir: pathlib.Path, dataset: Optional[data.Dataset],
               collective) -> tuple[list[Seed], int, tuple[int, int]]:
    """(The seeds config.seed ... + num_seeds - 1, the pool size N, this process's shard [lo, hi) of the pool).

    `dataset` replaces `data.load(config.data)`; seeds with the same data config share one load. Refuses a
    folder pinned with another config, a finished run, and (`config.validate_run`) data that cannot run."""
    seed_configs = config_lib.seed_configs(config)
    folders = [runfolder.seed_folder(workdir, c.seed, config.num_seeds) for c in seed_configs]
    for seed_config, folder in zip(seed_configs, folders) if collective.leader else []:
        runfolder.check_config_file(folder, config_json(seed_config))
    if collective.agreed(collective.leader and all((folder / SUMMARY).exists() for folder in folders)):
        raise RunFinished(f"{workdir} holds a finished run ({folders[0] / SUMMARY}); choose another --workdir to run "
                          "again.")
    loaded = {}  # data config (JSON) -> Dataset
    for c in seed_configs if dataset is None else []:
        if c.data.to_json(sort_keys=True) not in loaded:
            loaded[c.data.to_json(sort_keys=True)] = data.load(c.data)
    sources = [dataset or loaded[c.data.to_json(sort_keys=True)] for c in seed_configs]
    splits = [algorithm.split_pool(c, source) for c, source in zip(seed_configs, sources)]
    config_lib.validate_run(config, [(c, source, pool) for c, source, (_, _, pool) in zip(seed_configs, sources,
                                                                                           splits)], collective.count)
    num_pool = len(splits[0][2])
    shard = collective.shard(num_pool)
    return ([_seed(c, folder, source, split, shard, collective) for c, folder, source, split in
             zip(seed_configs, folders, sources, splits)], num_pool, shard)


def _seed(seed_config, folder, source: data.Dataset, split, shard, collective) -> Seed:
    dataset, val_indices, pool_indices = split
    hidden = None if source.train_labels is None else source.train_labels[pool_indices]
    pool_images = source.train_images[pool_indices[shard[0]: shard[1]]]  # all of it when alone
    dataset = collective.keep_shard(dataset, pool_images)
    value_range = collective.value_range(pool_images) if seed_config.oracle == "file" else None
    oracle = oracle_lib.build(seed_config, source, hidden, folder, value_range) if collective.leader else None
    pool_ids = source.row_ids[pool_indices]
    ledger = Ledger(folder, oracle, pool_ids, source.num_classes, source.class_names, collective)
    empty = np.full(len(pool_indices), -1, np.int32)
    return Seed(seed_config, jax.random.key(seed_config.seed), folder, dataset, val_indices, pool_indices, pool_ids,
                pool_images, hidden, ledger, RunState(0, None, empty, empty.copy()))


def config_json(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort(sort_keys=True))
