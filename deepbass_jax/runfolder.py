"""The files of a run folder: where each seed's files go, the pinned config, the oracle log, the metrics kept
after a resume, the summary. `rundir` guards the folder (lock, space, fault points); `checkpoint` writes files
atomically."""

from __future__ import annotations

import json
import pathlib

from absl import logging

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
