"""The files of a run folder: where each seed's files go, the pinned config, the oracle log, the metrics kept
after a resume, the summary. `rundir` guards the folder (lock, space, fault points); `checkpoint` writes files
atomically."""

from __future__ import annotations

import json
import pathlib

from absl import logging

import flax.serialization
import jax
import numpy as np

from deepbass_jax import checkpoint, plots


CHECKPOINT = "checkpoint.msgpack"
METRICS = "metrics.jsonl"
ORACLE_LOG = "oracle_log.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.json"


def seed_folder(workdir, seed: int, num_seeds: int) -> pathlib.Path:
    """Where a seed's files go: the workdir itself for a single run, `workdir/seed_<s>` when seeds run at once."""
    workdir = pathlib.Path(workdir)
    return workdir if num_seeds == 1 else workdir / f"seed_{seed}"


def check_config_file(folder, config: dict) -> None:
    """Refuses to resume a folder whose pinned config.json differs from `config`, naming the fields."""
    path = pathlib.Path(folder) / CONFIG
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != config:
            changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
            raise ValueError(
                f"{path} was written with a different config (fields {changed} differ); resume with the same "
                "config or choose another --workdir."
            )


def pin_config_file(folder, config: dict) -> None:
    path = pathlib.Path(folder) / CONFIG
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(path, config)


def logged_labels(folder, iteration: int) -> dict:
    """{pool index: label} the oracle log of `folder` holds for `iteration` (answers bought before a kill)."""
    return {e["index"]: e["label"] for e in checkpoint.read_jsonl(pathlib.Path(folder) / ORACLE_LOG)
            if e["iteration"] == iteration}


def log_labels(folder, iteration: int, indices, labels) -> None:
    """Appends (fsynced) one oracle-log line per label bought."""
    checkpoint.append_jsonl(pathlib.Path(folder) / ORACLE_LOG, [
        {"iteration": iteration, "index": int(i), "label": int(g)} for i, g in zip(indices, labels)])


def tidy_after_kill(workdir, folders) -> None:
    """Removes temp files and cuts the torn last line of each folder's logs: what a kill leaves behind."""
    for folder in {pathlib.Path(workdir), *map(pathlib.Path, folders)}:
        for stale in checkpoint.remove_temporaries(folder):
            logging.info("Removed %s, left by an interrupted write.", stale)
        for name in (METRICS, ORACLE_LOG):
            checkpoint.repair_jsonl(folder / name)


def keep_metrics_until(folder, iteration: int) -> None:
    """Drops metrics lines of iterations after `iteration` (they run again after a resume)."""
    path = pathlib.Path(folder) / METRICS
    checkpoint.rewrite_jsonl(path, [m for m in checkpoint.read_jsonl(path) if m["iteration"] <= iteration])


def write_summary(folder, iterations: int, labels: int) -> dict:
    """summary.json and curves.png of a finished run from its metrics and oracle log; returns the summary."""
    folder = pathlib.Path(folder)
    metrics = checkpoint.read_jsonl(folder / METRICS)
    final = metrics[-1]
    summary = {"iterations": iterations, "labels": labels, "final": final, "test_accuracy": final.get("test_accuracy"),
               "oracle_queries": len(checkpoint.read_jsonl(folder / ORACLE_LOG))}
    plots.curves(metrics, folder / "curves.png")
    checkpoint.write_json(folder / SUMMARY, summary)
    return summary


def save_run(workdir, iteration: int, states, seeds: list[dict]) -> None:
    """The checkpoint of all seeds after `iteration`: the stacked train states and per seed its ground truth,
    pseudo-labels and oracle state ({"ground_truth", "pseudo", "oracle"})."""
    raw = states.replace(dropout_key=jax.random.key_data(states.dropout_key))
    checkpoint.save(pathlib.Path(workdir) / CHECKPOINT, {
        "iteration": iteration,
        "train_state": jax.device_get(flax.serialization.to_state_dict(raw)),
        "seeds": {str(r): seed for r, seed in enumerate(seeds)},
    })


def restore_run(workdir, fresh_states, folders):
    """(iteration, train states, per-seed dicts of `save_run`) of the newest good checkpoint, or None for a fresh
    run; tidies first what a kill leaves behind (temp files, a torn last line of the logs) and afterwards drops
    the metrics lines of iterations that run again. A bad newest checkpoint is set aside, with a warning."""
    workdir = pathlib.Path(workdir)
    tidy_after_kill(workdir, folders)
    path = workdir / CHECKPOINT
    newest = checkpoint.load_newest(path)  # raises, naming both files, when neither is usable
    if newest is None:
        return None
    saved = newest.state
    template = fresh_states.replace(dropout_key=jax.random.key_data(fresh_states.dropout_key))
    restored = flax.serialization.from_state_dict(template, saved["train_state"])
    states = jax.device_put(restored.replace(dropout_key=jax.random.wrap_key_data(restored.dropout_key)))
    iteration = int(saved["iteration"])
    seeds = [{"ground_truth": np.array(saved["seeds"][str(r)]["ground_truth"], np.int32),
              "pseudo": np.array(saved["seeds"][str(r)]["pseudo"], np.int32),
              "oracle": saved["seeds"][str(r)]["oracle"]} for r in range(len(folders))]
    for folder in folders:
        keep_metrics_until(folder, iteration)  # later lines belong to iterations that run again
    if newest.problems:
        kept = f"; it was moved to {checkpoint.set_aside(path)}" if path.exists() else ""
        logging.warning(
            "The newest checkpoint is unusable (%s)%s. Resuming from the previous checkpoint %s after iteration "
            "%d: later iterations run again, reusing the labels in the oracle logs instead of asking again.",
            "; ".join(newest.problems), kept, newest.path, iteration,
        )
    logging.info("Resuming %s after iteration %d.", workdir, iteration)
    return iteration, states, seeds
