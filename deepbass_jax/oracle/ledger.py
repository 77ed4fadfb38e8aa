"""The label ledger of one seed: lines 9-11 of Algorithm 3.1 as bookkeeping. Every label bought from the oracle is
logged (fsynced) in the run folder's oracle log before the run uses it; after a kill the log is replayed, so no
label is asked twice; `corrections.csv` changes a bought label, logged as a correction.

With several processes every process holds a ledger and calls it at the same points; process 0's alone asks its
oracle and writes the log, and the others learn the labels from it through the collective.
"""

from __future__ import annotations

import csv
import pathlib
from typing import Callable, Optional, Sequence

import numpy as np
from absl import logging

from deepbass_jax.oracle import FileOracle, LabelsPending, Oracle, OracleError, parse_label
from deepbass_jax.workdir import checkpoint, guard
from deepbass_jax.workdir.runfolder import ORACLE_LOG

CORRECTIONS = "corrections.csv"  # id,label rows a person adds to correct a bought label


def logged_labels(folder, iteration: int) -> dict:
    """{pool index: label} the oracle log of `folder` holds for `iteration` (answers bought before a kill;
    corrections aside)."""
    return {e["index"]: e["label"] for e in checkpoint.read_jsonl(pathlib.Path(folder) / ORACLE_LOG)
            if e["iteration"] == iteration and not e.get("correction")}


def current_labels(folder) -> dict:
    """{id: label} of every label bought, as corrected: the last oracle-log line of each id."""
    return {e.get("id", e["index"]): e["label"] for e in checkpoint.read_jsonl(pathlib.Path(folder) / ORACLE_LOG)}


def log_labels(folder, iteration: int, indices, labels, ids=None, correction: bool = False) -> None:
    """Appends (fsynced) one oracle-log line per label: `index` is the pool position, `id` the row in the user's
    file; a correction of a label bought before is marked so."""
    ids = indices if ids is None else ids
    extra = {"correction": True} if correction else {}
    checkpoint.append_jsonl(pathlib.Path(folder) / ORACLE_LOG, [
        {"iteration": iteration, "index": int(i), "id": int(d), "label": int(g), **extra}
        for i, d, g in zip(indices, ids, labels)])


def read_corrections(path, parse: Callable[[str], Optional[int]]) -> dict:
    """{id: label} of a corrections file (columns id,label; `parse(text)` -> class or None); OracleError names
    every bad row."""
    corrections, problems = {}, []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"id", "label"} <= set(reader.fieldnames or []):
            raise OracleError(f"{path}: the header row must name the columns id,label (found {reader.fieldnames}).")
        for row_number, row in enumerate(reader, start=2):
            label = parse(row.get("label") or "")
            try:
                sample_id = int(row.get("id") or "")
            except ValueError:
                problems.append(f"row {row_number}: id {row.get('id')!r} is not an integer")
                continue
            if label is None:
                problems.append(f"row {row_number}: label {row.get('label')!r} of id {sample_id} is not a class")
            else:
                corrections[sample_id] = label
    if problems:
        raise OracleError(f"{path} has invalid rows:\n  " + "\n  ".join(problems) + "\nCorrect them and run the "
                          "same command again; corrections are applied at the next iteration.")
    return corrections


class Ledger:
    """One seed's labels from its oracle (process 0's; None on the others) for the pool samples whose rows in the
    user's file are `pool_ids` [N]."""

    def __init__(self, folder: pathlib.Path, oracle: Optional[Oracle], pool_ids: np.ndarray, num_classes: int,
                 class_names: Optional[Sequence[str]], collective):
        self.folder, self.oracle, self.pool_ids = folder, oracle, pool_ids
        self.num_classes, self.class_names = num_classes, class_names
        self.collective = collective
        self._warned: set = set()  # what a resumed run has warned about once already

    def state_dict(self) -> dict:
        """What a checkpoint holds of the oracle (process 0's)."""
        return self.oracle.state_dict()

    def load_state_dict(self, state: Optional[dict]) -> None:
        if self.oracle is not None:
            self.oracle.load_state_dict(state)

    def buy(self, iteration: int, indices, images_of: Callable, context_of: Callable) -> tuple[np.ndarray, np.ndarray]:
        """Lines 9-11: ground truth for pool samples `indices` -> (pool indices [k], their labels [k]), logged
        before use. `images_of(indices)` and `context_of()` give what the oracle shows a person; every process
        calls them.

        Labels an interrupted earlier attempt logged for this iteration are reused, never asked again; the oracle
        replays them, so its state is that of an uninterrupted run. Only samples without a complete log line are
        asked: a line torn by a kill (cut off on resume) was not durably logged, so that label is asked again,
        as is an answer that arrived but was killed before its line was written (it cannot be logged earlier).
        """
        indices = np.asarray(indices, np.int64)
        bought, labels, ask = np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
        if self.collective.leader:
            logged = logged_labels(self.folder, iteration)
            bought = np.array(list(logged), np.int64)
            labels = np.array(list(logged.values()), np.int32)
            if len(bought):
                self.oracle.replay(bought, labels)
            unlogged = [i for i in indices.tolist() if i not in logged]
            ask = np.array(unlogged[: max(len(indices) - len(logged), 0)], np.int64)
        ask = self.collective.from_leader(ask, len(indices))
        images = images_of(ask) if len(ask) else None
        context = context_of()
        failure = None
        if self.collective.leader and len(ask):
            try:
                answers = np.asarray(self.oracle.label(ask, images, self.pool_ids[ask], context), np.int32)
                guard.fault_point("after_oracle")
                log_labels(self.folder, iteration, ask, answers, self.pool_ids[ask])
                guard.fault_point("after_oracle_log")
                bought, labels = np.concatenate([bought, ask]), np.concatenate([labels, answers])
            except Exception as error:  # pylint: disable=broad-except
                failure = error
        self.collective.settle(failure, LabelsPending)
        return (self.collective.from_leader(bought, len(indices)),
                self.collective.from_leader(labels, len(indices)))

    def correct(self, iteration: int, ground_truth: np.ndarray) -> np.ndarray:
        """The ground truth [N] with the folder's corrections.csv (id,label) applied to labels bought earlier, each
        change logged as a correction; warns once about answers.csv rows edited after the run took them."""
        changes = self._corrections(ground_truth) if self.collective.leader else []
        if changes:
            where, ids, labels = (np.array(column) for column in zip(*changes))
            log_labels(self.folder, iteration, where, labels, ids, correction=True)
            ground_truth = ground_truth.copy()
            ground_truth[where] = labels
        if self.collective.leader and isinstance(self.oracle, FileOracle):
            self._warn_about_edited_answers()
        if self.collective.agreed(bool(changes)):
            ground_truth = self.collective.broadcast(ground_truth)
        return ground_truth

    def _corrections(self, ground_truth: np.ndarray) -> list[tuple[int, int, int]]:
        """(pool index, id, new label) of each correction that changes a bought label."""
        path = self.folder / CORRECTIONS
        if not path.exists():
            return []
        position = {int(i): p for p, i in enumerate(self.pool_ids)}
        corrections = read_corrections(path, lambda text: parse_label(text, self.num_classes, self.class_names))
        changes = []
        for sample_id, label in corrections.items():
            where = position.get(sample_id)
            if where is None or ground_truth[where] < 0:
                if (sample_id, "unbought") not in self._warned:
                    logging.warning("%s: id %d has no bought label to correct (corrections apply to labels the oracle "
                                    "gave); row ignored.", path, sample_id)
                    self._warned.add((sample_id, "unbought"))
            elif ground_truth[where] != label:
                logging.warning("Correcting the label of id %d from %d to %d (%s).", sample_id, ground_truth[where],
                                label, path)
                changes.append((where, sample_id, label))
        return changes

    def _warn_about_edited_answers(self) -> None:
        current = current_labels(self.folder)
        for sample_id, label, answers in self.oracle.edited_answers(current):
            if (sample_id, label) not in self._warned:
                self._warned.add((sample_id, label))
                logging.warning(
                    "%s now gives id %d the label %d, but the run took this file before the edit and uses the logged "
                    "label %d. To correct a label, add the row '%d,%d' to %s (columns id,label): it is applied at the "
                    "next iteration.", answers, sample_id, label, current[sample_id], sample_id, label,
                    self.folder / CORRECTIONS)
