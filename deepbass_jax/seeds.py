"""The seeds of a run, built before any work: each one's data, pool, label ledger and state, after stage 2 of the
config's validation (`config.validate_run`). With several processes each keeps only its shard of the pool."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from deepbass_jax import algorithm, config as config_lib, data, oracle as oracle_lib
from deepbass_jax.algorithm import RunState
from deepbass_jax.oracle.ledger import Ledger, finished_run_note
from deepbass_jax.workdir import checkpoint, runfolder
from deepbass_jax.workdir.runfolder import METRICS, SUMMARY


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
    # [N] each pool sample's id, which queries, logs and exports use: its row in the user's file (int64), or for a
    # folder of images its file's path relative to the folder (object: str)
    pool_ids: np.ndarray
    pool_images: np.ndarray  # [N, ...]; with several processes only this process's shard [hi - lo, ...]
    hidden_labels: Optional[np.ndarray]  # [N], for metrics only: the driver learns labels through the ledger
    ledger: Ledger
    state: RunState
    given: Optional[np.ndarray] = None  # [N] int32 labels that came with the data (-1: unknown), or None
    pool_files: Optional[tuple] = None  # [N] each pool sample's file in the user's folder, or None

    def initial_query(self, num_classes: int) -> np.ndarray:
        """Line 1: the pool indices to buy first. Labels that came with the data are ground truth from the start
        and replace the initial draw (nothing is bought then)."""
        if self.given is not None and (self.given >= 0).any():
            self.state.ground_truth = np.where(self.given >= 0, self.given, -1).astype(np.int32)
            return np.zeros(0, np.int64)
        return algorithm.initial_indices(self.config, self.hidden_labels, len(self.pool_indices), num_classes)

    def buy(self, iteration: int, indices, oracle: str, collective, num_pool: int) -> int:
        """Lines 9-11: the ledger buys (or replays) the labels of pool `indices`; they become ground truth. Every
        process takes part (the images and the query's context are gathered over the processes)."""
        bought, labels = self.ledger.buy(iteration, indices, lambda ask: self.images(ask, collective, num_pool),
                                         lambda: self.query_context(oracle, collective, num_pool))
        self.state.ground_truth[bought] = labels
        self.state.pseudo[bought] = -1
        return len(bought)

    def images(self, indices, collective, num_pool: int) -> np.ndarray:
        """Images of pool samples `indices` [n] (pool positions) -> [n, ...], gathered from the processes' shards;
        every process calls it together."""
        return collective.rows(self.pool_images, num_pool, indices)

    def query_context(self, oracle: str, collective, num_pool: int) -> Optional[dict]:
        """Vector data and a person as the oracle: the pool and its labeled points, to place queried points among
        them (every process takes part)."""
        if self.pool_images.ndim != 2 or oracle != "file":
            return None
        points = collective.gather_shards(np.asarray(self.pool_images), num_pool)
        labeled = self.state.labeled
        return {"points": points, "labeled_points": points[labeled], "labeled_labels": self.state.ground_truth[labeled]}

    def draw_decision_boundary(self, apply_fn, params, collective, num_pool: int) -> None:
        """decision_boundary.png of a finished run on 2-D data (config.figures; every process takes part)."""
        if self.config.figures and self.pool_images.ndim == 2 and self.pool_images.shape[1] == 2:
            points = collective.gather_shards(np.asarray(self.pool_images), num_pool)
            if collective.leader:
                from deepbass_jax import plots  # matplotlib: 0.4 s of every start, for runs that finish

                plots.decision_boundary(apply_fn, params, points, self.state.labeled, self.hidden_labels,
                                        self.folder / "decision_boundary.png", class_names=self.dataset.class_names)

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the seed beside its network: its sets and its oracle's state."""
        return {"ground_truth": self.state.ground_truth, "pseudo": self.state.pseudo, "oracle": self.ledger.state_dict()}

    def load_state_dict(self, saved: dict) -> None:
        self.ledger.load_state_dict(saved["oracle"])
        self.state.ground_truth, self.state.pseudo = saved["ground_truth"], saved["pseudo"]

    def write_initial_metrics(self, held_out: dict) -> None:
        """metrics.jsonl's first line: the initial network's held-out metrics (iteration 0)."""
        labels = int(self.state.labeled.sum())
        initial = {"iteration": 0, "labels": labels, "bought": labels, **held_out}
        checkpoint.rewrite_jsonl(self.folder / METRICS, [initial])
        logging.info("Initial model of seed %d: %s", self.config.seed, initial)

    def finish(self, apply_fn, params, collective, num_pool: int, iterations: int,
               restart: Optional[dict]) -> Optional[dict]:
        """A finished run's figure and summary.json (which marks it done); the summary (None off process 0)."""
        self.draw_decision_boundary(apply_fn, params, collective, num_pool)
        if not collective.leader:
            return None
        summary = self.write_summary(iterations, restart)
        logging.info("Finished %s: %s", self.folder, summary)
        return summary

    def write_summary(self, iterations: int, restart: Optional[dict] = None) -> dict:
        """summary.json (and curves.png) of a finished run: what marks it done; `restart`: the clean restart's
        held-out metrics (config.restart_epochs)."""
        title = f"{self.dataset.name}, seed {self.config.seed}, preset {self.config.get('preset') or 'none'}"
        return runfolder.write_summary(self.folder, iterations, int(self.state.labeled.sum()), title,
                                       self.config.figures, restart)

    def write_labels(self, mean_probs, entropy) -> None:
        """labels.csv: every pool sample's label and where it came from (mean_probs [N, C], entropy [N])."""
        runfolder.write_labels(self.folder, self.pool_ids, self.state.ground_truth, self.state.pseudo, mean_probs,
                               entropy, self.dataset.class_names, None if self.given is None else self.given >= 0,
                               self.pool_files)



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
                          "again." + (finished_run_note(workdir, folders) if collective.leader else ""))
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
    # ids come from the data, never a checkpoint: a resumed run names its samples as before
    pool_ids = source.row_ids[pool_indices] if source.files is None else np.asarray(source.files, object)[pool_indices]
    ledger = Ledger(folder, oracle, pool_ids, source.num_classes, source.class_names, collective)
    empty = np.full(len(pool_indices), -1, np.int32)
    given = None if source.given_labels is None else np.asarray(source.given_labels, np.int32)[pool_indices]
    files = None if source.files is None else tuple(pool_ids.tolist())
    return Seed(seed_config, jax.random.key(seed_config.seed), folder, dataset, val_indices, pool_indices, pool_ids,
                pool_images, hidden, ledger, RunState(0, None, empty, empty.copy()), given, files)


def refresh_pseudo_labels(seeds: list[Seed], stats, theta, config: ml_collections.ConfigDict, seed_axis: str) -> None:
    """Lines 6-7 (eqs. 4 and 9) for every seed: `algorithm.seeds_pseudo_labels` over the stacked sets, each seed's
    pseudo-labels [N] written back (stats fields [R, N, ...], theta [R])."""
    pseudo = np.asarray(algorithm.seeds_pseudo_labels(
        stats, theta, jnp.asarray(np.stack([s.state.labeled for s in seeds])),
        jnp.asarray(np.stack([s.state.selected for s in seeds])), mode=config.mode, seed_axis=seed_axis,
        ground_truth=jnp.asarray(np.stack([s.state.ground_truth for s in seeds])),
        alignment=config.pseudo_alignment, confidence=config.pseudo_confidence))
    for seed, seed_pseudo in zip(seeds, pseudo):
        seed.state.pseudo = np.array(seed_pseudo, np.int32)


def pool_on_device(seeds: list[Seed]) -> tuple[bool, jax.Array]:
    """(Whether every seed has the same pool, the pool images on the device: [N, ...] if so, else [R, N, ...])."""
    first = seeds[0]
    shared = all(np.array_equal(s.pool_indices, first.pool_indices) and s.dataset.train_images is
                 first.dataset.train_images for s in seeds)
    return shared, jnp.asarray(first.pool_images if shared else np.stack([s.pool_images for s in seeds]))


def label_plan(config: ml_collections.ConfigDict, seed: Seed, num_classes: int) -> str:
    """What the run's first lines say of the labels: how many are known, how many the schedule buys, and whether
    it reaches the budget."""
    known = 0 if seed.given is None else int((seed.given >= 0).sum())
    if config.initial_all:
        return f"Labels: all {len(seed.pool_indices)} pool samples are labeled at the start (config.initial_all)."
    if known:
        start = (f"{known} labels came with the data (they replace the initial draw: config.initial_per_class="
                 f"{config.initial_per_class} is ignored)")
    else:
        start = (f"{config.initial_per_class * num_classes} initial labels ({config.initial_per_class} per class, "
                 + ("balanced from the hidden labels)" if config.oracle == "simulated" and seed.hidden_labels
                    is not None else "drawn at random: nobody knows the classes yet, so the first round asks a "
                                     "random sample)"))
        known = config.initial_per_class * num_classes
    rounds = -(-config.iterations // config.acquire_every) if config.active else 0
    buys = max(min(config.budget - known, rounds * config.acquire_count), 0)
    reach = ("reaching the budget" if known + buys >= config.budget else
             f"short of the budget {config.budget} by {config.budget - known - buys}: raise config.iterations or "
             "config.acquire_count to spend it")
    return (f"Labels: {start}; the schedule buys {config.acquire_count} every {config.acquire_every} iteration(s) for "
            f"{config.iterations} iterations: {buys} more, {known + buys} in all, {reach} ({config.budget}).")


def config_json(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort(sort_keys=True))
