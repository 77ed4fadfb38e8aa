"""Applies corrections.csv to a finished run: the only module with these flags.

  python -m experiments.relabel --workdir=/tmp/run

A run applies the rows of `corrections.csv` (columns id,label) at the start of each iteration; rows written after
it finished would otherwise never count. This command takes a finished run (its summary.json) and, in each seed
folder with a corrections.csv:
  - appends every row that changes a bought label to `oracle_log.jsonl` as a correction (`"correction": true`,
    iteration = the run's last iteration + 1: after the last one), as a running run would;
  - rewrites the rows of those ids in `labels.csv`: `label`, `class_name` (when there is that column) and
    `source` (= oracle); every other row and column stays as the run exported it (`probability` and `entropy`
    are the final network's, measured when the run finished, for the label it exported then).
An id is a row of the user's file, or for a folder of images a file's path relative to it (as queries.csv and
labels.csv write it). Rows for ids the oracle never labeled are reported and left alone. Running it again changes
nothing more. The class names and count come from the run's data (its config.json), which is loaded for this.
Without a summary.json the run is unfinished: the same command that started it applies the corrections as it
continues.
"""

import csv
import io
import json
import pathlib
import sys

import ml_collections
from absl import app, flags, logging

from deepbass_jax import data
from deepbass_jax.oracle import OracleError, ids as ids_lib, ledger
from deepbass_jax.workdir import checkpoint, guard, runfolder

def finished_folders(workdir) -> list[pathlib.Path]:
    """The seed folders of the finished run in `workdir` (the workdir itself for one seed); ValueError, in one line,
    for a workdir without a finished run."""
    workdir = pathlib.Path(workdir)
    if (workdir / runfolder.SUMMARY).exists():
        return [workdir]
    seeds = sorted(p for p in workdir.glob("seed_*") if (p / runfolder.CONFIG).exists())
    if seeds and all((p / runfolder.SUMMARY).exists() for p in seeds):
        return seeds
    if (workdir / runfolder.CONFIG).exists() or seeds:
        raise ValueError(f"{workdir} holds a run that has not finished (no {runfolder.SUMMARY}): it applies "
                         f"{ledger.CORRECTIONS} itself at its next iteration; run the same experiments.main command "
                         "again to continue it.")
    raise ValueError(f"{workdir} holds no run (no {runfolder.CONFIG}); give the --workdir of a finished run.")


def relabel(workdir) -> list[str]:
    """Applies each finished seed folder's corrections.csv in `workdir` (see the module docstring); returns a line
    per folder saying what changed. Holds the workdir's lock meanwhile."""
    folders = finished_folders(workdir)
    lock = guard.Lock(workdir)
    try:
        return [_relabel_folder(folder, workdir) for folder in folders]
    finally:
        lock.release()


def _relabel_folder(folder: pathlib.Path, workdir) -> str:
    """Applies `folder`'s corrections.csv (a seed folder of the finished run in `workdir`); what changed, in a line."""
    if not (folder / ledger.CORRECTIONS).exists():
        return f"{folder}: no {ledger.CORRECTIONS}, nothing to apply."
    pinned = ml_collections.ConfigDict(json.loads((folder / runfolder.CONFIG).read_text()))
    try:
        dataset = data.load(pinned.data)
    except (ValueError, OSError) as error:
        raise ValueError(f"{folder}: the class names and count come from the run's data, which did not load "
                         f"({error}); make the data of {folder / runfolder.CONFIG} available and run this again.") \
            from error
    iteration = int(json.loads((folder / runfolder.SUMMARY).read_text())["iterations"]) + 1
    paths = dataset.files is not None  # a folder of images names its samples by path
    changes, unbought = ledger.pending_corrections(folder, dataset.num_classes, dataset.class_names,
                                                   f"run {ledger.RELABEL.format(workdir)} again", paths)
    for sample_id in unbought:
        logging.warning("%s: id %s has no label the oracle gave (corrections apply to bought labels); row ignored.",
                        folder / ledger.CORRECTIONS, ids_lib.show(sample_id))
    if not changes:
        return f"{folder}: {ledger.CORRECTIONS} changes no label (every row is applied already)."
    # labels.csv first: if this is stopped before the log is written, running it again finds the rows still to do.
    exported = _rewrite_labels_csv(folder, {sample_id: label for _, sample_id, _, label in changes},
                                   dataset.class_names, paths)
    where, ids, _, labels = zip(*changes)
    ledger.log_labels(folder, iteration, where, labels, ids, correction=True)
    shown = ", ".join(f"{ids_lib.show(sample_id)}: {old} -> {new}" for _, sample_id, old, new in changes)
    return (f"{folder}: corrected {len(changes)} label(s) ({shown}), logged in {runfolder.ORACLE_LOG}"
            + (f" and shown in {runfolder.LABELS}." if exported else f"; the run wrote no {runfolder.LABELS}."))


def _rewrite_labels_csv(folder: pathlib.Path, corrected: dict, class_names, paths: bool = False) -> bool:
    """Rewrites the rows of the `corrected` ids ({id: label}; `paths`: ids are files' paths) of labels.csv (label,
    class_name, source = oracle); False when the run wrote no labels.csv."""
    path = folder / runfolder.LABELS
    if not path.exists():
        return False
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    column = {name: k for k, name in enumerate(header)}
    for row in rows[1:]:
        label = corrected.get(row[column["id"]] if paths else int(row[column["id"]]))
        if label is not None:
            row[column["label"]] = str(label)
            row[column["source"]] = "oracle"
            if "class_name" in column and class_names is not None:
                row[column["class_name"]] = class_names[label]
    table = io.StringIO(newline="")
    csv.writer(table, lineterminator="\n").writerows(rows)
    checkpoint.atomic_write_bytes(path, table.getvalue().encode())
    return True


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        lines = relabel(flags.FLAGS.workdir)
    except (ValueError, OracleError, guard.WorkdirError) as error:
        sys.exit(f"error: {error}")
    print("\n".join(lines))


if __name__ == "__main__":
    # Defined here, not on import: experiments.main defines its own --workdir, and tests import both modules.
    flags.DEFINE_string("workdir", None, "The finished run's directory (--workdir of experiments.main).")
    flags.mark_flags_as_required(["workdir"])
    app.run(main)
