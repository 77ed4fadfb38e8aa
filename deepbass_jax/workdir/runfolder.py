"""The files of a run folder: where each seed's files go, the pinned config, the oracle log, the metrics kept
after a resume, the checkpoint of all seeds, labels.csv, the summary. `guard` guards the folder (lock, space,
fault points); `checkpoint` writes files atomically; the oracle's ledger writes the oracle log.""" 

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Optional

from absl import logging

import flax.serialization
import jax
import numpy as np

from deepbass_jax import config as config_lib
from deepbass_jax.workdir import checkpoint


CHECKPOINT = "checkpoint.msgpack"
METRICS = "metrics.jsonl"
ORACLE_LOG = "oracle_log.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.json"
LABELS = "labels.csv"
TENSORBOARD = "tensorboard"  # event files of config.tensorboard runs
# Fields a resumed run may change: they do not change the algorithm (how long the file oracle waits, how many
# training steps go to the device at once, which kernels compute the network: the same up to round-off, whether
# the finished run draws its figures, whether the lines log a theta the run does not use, whether they go to
# TensorBoard too).
RESUMABLE_CHANGES = ("oracle_wait_seconds", "train.steps_per_call", "model.kernels", "figures", "log_theta",
                     "tensorboard")


def seed_folder(workdir, seed: int, num_seeds: int) -> pathlib.Path:
    """Where a seed's files go: the workdir itself for a single run, `workdir/seed_<s>` when seeds run at once."""
    workdir = pathlib.Path(workdir)
    return workdir if num_seeds == 1 else workdir / f"seed_{seed}"


def check_config_file(folder, config: dict) -> None:
    """Refuses to resume a folder whose pinned config.json differs from `config`, naming the fields."""
    path = pathlib.Path(folder) / CONFIG
    if path.exists():
        saved, config = flat_fields(json.loads(path.read_text())), flat_fields(config)
        defaults = flat_fields(json.loads(config_lib.default_config().to_json_best_effort()))
        for field in set(config) - set(saved):  # added to the code after the folder was pinned, at its default
            if field in defaults and config[field] == defaults[field]:
                saved[field] = config[field]
        for field in RESUMABLE_CHANGES:
            saved.pop(field, None), config.pop(field, None)
        if saved != config:
            changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
            raise ValueError(
                f"{path} was written with a different config (fields {changed} differ); resume with the same "
                "config or choose another --workdir."
            )


def flat_fields(tree: dict, prefix: str = "") -> dict:
    """A config as JSON, flattened: {"data": {"seed": 0}} -> {"data.seed": 0}."""
    fields = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            fields.update(flat_fields(value, f"{prefix}{key}."))
        else:
            fields[prefix + key] = value
    return fields


def pin_config_file(folder, config: dict) -> None:
    path = pathlib.Path(folder) / CONFIG
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(path, config)


def tidy_after_kill(workdir, folders) -> None:
    """Removes temp files and cuts the torn last line of each folder's logs: what a kill leaves behind."""
    for folder in {pathlib.Path(workdir), *map(pathlib.Path, folders)}:
        for stale in checkpoint.remove_temporaries(folder):
            logging.info("Removed %s, left by an interrupted write.", stale)
        for name in (METRICS, ORACLE_LOG):
            checkpoint.repair_jsonl(folder / name)


def append_metrics(folder, line: dict, tensorboard: bool = False) -> None:
    """Appends an iteration's metrics line (fsynced: metrics.jsonl is the record); with `tensorboard`, also its
    numbers as TensorBoard scalars in folder/tensorboard (tensorboardX, no TensorFlow), step = the iteration."""
    checkpoint.append_jsonl(pathlib.Path(folder) / METRICS, [line])
    if tensorboard:
        write_scalars(pathlib.Path(folder) / TENSORBOARD, line)


_WRITERS: dict = {}  # logdir -> this process's event file there (tensorboardX's synchronous EventsWriter)


def write_scalars(logdir: pathlib.Path, line: dict) -> None:
    """The numbers of a metrics line (nested dicts as "name/key") as TensorBoard scalars at step line["iteration"],
    on disk when this returns."""
    try:  # pylint: disable=import-outside-toplevel
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto import event_pb2, summary_pb2
    except ImportError as error:
        raise ImportError('config.tensorboard needs tensorboardX: pip install -e ".[tensorboard]"') from error
    if logdir not in _WRITERS:
        logdir.mkdir(parents=True, exist_ok=True)
        _WRITERS[logdir] = EventsWriter(str(logdir / "events"), f".{os.getpid()}")
    values = [summary_pb2.Summary.Value(tag=f"{name}/{key}" if key else name, simple_value=float(number))
              for name, value in line.items() if name != "iteration"
              for key, number in (value.items() if isinstance(value, dict) else [("", value)])
              if isinstance(number, (int, float)) and not isinstance(number, bool)]
    event = event_pb2.Event(wall_time=time.time(), step=line["iteration"], summary=summary_pb2.Summary(value=values))
    _WRITERS[logdir].write_event(event)
    _WRITERS[logdir].flush()


def keep_metrics_until(folder, iteration: int) -> None:
    """Drops metrics lines of iterations after `iteration` (they run again after a resume)."""
    path = pathlib.Path(folder) / METRICS
    checkpoint.rewrite_jsonl(path, [m for m in checkpoint.read_jsonl(path) if m["iteration"] <= iteration])


def write_labels(folder, ids, ground_truth, pseudo, mean_probs, entropy, class_names=None, given=None,
                 files=None) -> None:
    """labels.csv: one row per pool sample with its id, (its file,) label, source (given / oracle / pseudo-label /
    prediction), the mean MC-dropout probability of that label (eq. 7) and the normalized entropy (eq. 3).

    ids [N]: rows of the user's file (ints), or for a folder of images each file's path in it (strs, quoted as CSV
    quotes them; then the same as `files`); ground_truth, pseudo [N] (-1: none); mean_probs [N, C]; entropy [N];
    class_names [C] or None; given [N] bool (labels that came with the data) or None; files [N] (paths in the
    user's folder) or None.
    """
    predicted = np.argmax(mean_probs, axis=1)
    label = np.where(ground_truth >= 0, ground_truth, np.where(pseudo >= 0, pseudo, predicted))
    source = np.where(ground_truth >= 0, "oracle", np.where(pseudo >= 0, "pseudo-label", "prediction"))
    if given is not None:
        source = np.where(given, "given", source)
    probability = np.take_along_axis(mean_probs, label[:, None], axis=1)[:, 0]
    columns = {"id": [i if isinstance(i, int) else _csv_field(str(i)) for i in np.asarray(ids).tolist()]}
    if files is not None:
        columns["file"] = [_csv_field(f) for f in files]
    columns["label"] = label.tolist()
    if class_names:
        columns["class_name"] = [_csv_field(n) for n in np.asarray(class_names, object)[label].tolist()]
    columns.update(source=source.tolist(), probability=[f"{q:.6f}" for q in probability.tolist()],
                   entropy=[f"{h:.6f}" for h in np.asarray(entropy).tolist()])
    rows = (",".join(map(str, row)) for row in zip(*columns.values()))
    text = "\n".join([",".join(columns), *rows]) + "\n"
    checkpoint.atomic_write_bytes(pathlib.Path(folder) / LABELS, text.encode())


def _csv_field(text: str) -> str:
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n\r') else text


def write_summary(folder, iterations: int, labels: int, title: str = "", figures: bool = True,
                  restart: Optional[dict] = None) -> dict:
    """summary.json and (with `figures`) curves.png of a finished run from its metrics and oracle log; returns the
    summary. `restart`: the clean restart network's held-out metrics, kept as the summary's "restart"."""
    folder = pathlib.Path(folder)
    metrics = checkpoint.read_jsonl(folder / METRICS)
    final = metrics[-1]
    queries = [e for e in checkpoint.read_jsonl(folder / ORACLE_LOG) if not e.get("correction")]
    summary = {"iterations": iterations, "labels": labels, "final": final, "test_accuracy": final.get("test_accuracy"),
               "oracle_queries": len(queries)}
    if restart is not None:
        summary["restart"] = restart
    if figures:
        from deepbass_jax import plots  # matplotlib: 0.4 s of every start, for runs that finish

        plots.curves(metrics, folder / "curves.png", title)
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
