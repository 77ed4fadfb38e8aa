"""The label ledger of one seed: lines 9-11 of Algorithm 3.1 as bookkeeping. Every label bought from the oracle is
logged (fsynced) in the run folder's oracle log before the run uses it; after a kill the log is replayed, so no
label is asked twice; `corrections.csv` changes a bought label, logged as a correction (a finished run takes it
through `python -m experiments.relabel --workdir=DIR`). A partly answered answers.csv is logged as far as it goes, so
the next start asks only for the rest.

Ids are a sample's row in the user's file (ints) or, for a folder of images, its file's path relative to the folder
(strs); see `ids`. The log holds them as JSON numbers or strings, and a CSV cell is read by the run's kind.

With several processes every process holds a ledger and calls it at the same points; process 0's alone asks its
oracle and writes the log, and the others learn the labels from it through the collective.
"""

from __future__ import annotations

import csv
import json
import pathlib
from typing import Callable, Collection, Optional, Sequence

import numpy as np
from absl import logging

from deepbass_jax.oracle import FileOracle, LabelsPending, Oracle, OracleError, ids as ids_lib, parse_label
from deepbass_jax.oracle.files import label_problem, read_table, shown_ids, whole_number
from deepbass_jax.workdir import checkpoint, guard
from deepbass_jax.workdir.runfolder import CONFIG, LABELS, ORACLE_LOG

CORRECTIONS = "corrections.csv"  # id,label rows a person adds to correct a bought label
WARNED = "oracle_warnings.json"  # the warnings about corrections.csv and answers.csv a run folder has given, once each


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
    file (a number) or its file's path (a string); a correction of a label bought before is marked so."""
    ids = indices if ids is None else ids
    extra = {"correction": True} if correction else {}
    checkpoint.append_jsonl(pathlib.Path(folder) / ORACLE_LOG, [
        {"iteration": iteration, "index": int(i), "id": ids_lib.plain(d), "label": int(g), **extra}
        for i, d, g in zip(indices, ids, labels)])


def oracle_answers(folder) -> dict:
    """{id: label} of every label the oracle gave, corrections aside: the last non-correction oracle-log line of
    each id."""
    return {e.get("id", e["index"]): e["label"] for e in checkpoint.read_jsonl(pathlib.Path(folder) / ORACLE_LOG)
            if not e.get("correction")}


APPLIED_NEXT = "run the same command again; corrections are applied at the next iteration"


def read_corrections(path, num_classes: int, class_names: Optional[Sequence[str]] = None,
                     then: str = APPLIED_NEXT, paths: bool = False, known: Collection = ()) -> dict:
    """{id: label} of a corrections file (columns id,label, read as `files.read_table` reads a spreadsheet's CSV;
    an id is a whole number, or with `paths` a file's path, read as `ids.parse` reads it against the `known` ids;
    a label is a class number in [0, num_classes), `2.0` too, or a class name; a later row of an id wins);
    OracleError names every bad row, in one line ending "Correct them and `then`"."""
    corrections, problems = {}, []
    table = read_table(path, ("id", "label"), "give the header row id,label and one row per corrected label")
    for number, row, surplus in table.rows:
        sample_id = ids_lib.parse(row.get("id"), paths, known)
        text = (row.get("label") or "").strip()
        if any(extra.strip() for extra in surplus):
            problems.append(f"row {number}: {table.width + len(surplus)} fields where the header has {table.width}")
        elif sample_id is None:
            problems.append(f"row {number}: {ids_lib.not_an_id(row.get('id'), paths)}")
        elif not text:
            problems.append(f"row {number}: id {ids_lib.show(sample_id)} has no label")
        elif label_problem(text, sample_id, num_classes, class_names):
            problems.append(f"row {number}: {label_problem(text, sample_id, num_classes, class_names)}")
        else:
            corrections[sample_id] = parse_label(text, num_classes, class_names)
    if problems:
        raise OracleError(f"{path} has invalid rows: " + "; ".join(problems) + f". Correct them and {then}.")
    return corrections


# ------------------------------------------------------------------------------------------ a finished run
RELABEL = "python -m experiments.relabel --workdir={}"  # applies corrections.csv to a finished run


def pending_corrections(folder, num_classes: int, class_names: Optional[Sequence[str]] = None,
                        then: str = APPLIED_NEXT, paths: Optional[bool] = None) -> tuple[list[tuple], list]:
    """What the folder's corrections.csv would change in its oracle log: ([(pool index, id, label now, corrected
    label)] for each row that changes a bought label, [ids of rows for labels never bought]). `paths`: the ids are
    files' paths (None: as `ids_are_paths` finds in the folder). OracleError names bad rows (see `read_corrections`)."""
    path = pathlib.Path(folder) / CORRECTIONS
    if not path.exists():
        return [], []
    bought = {}  # id -> (pool index, label now)
    for line in checkpoint.read_jsonl(pathlib.Path(folder) / ORACLE_LOG):
        bought[line.get("id", line["index"])] = (line["index"], line["label"])
    paths = ids_are_paths(folder) if paths is None else paths
    changes, unbought = [], []
    for sample_id, label in read_corrections(path, num_classes, class_names, then, paths, bought).items():
        if sample_id not in bought:
            unbought.append(sample_id)
        elif bought[sample_id][1] != label:
            changes.append((bought[sample_id][0], sample_id, bought[sample_id][1], label))
    return changes, unbought


def finished_run_note(workdir, folders) -> str:
    """For the message that refuses to run a finished run again: a sentence naming the corrections.csv rows that
    its oracle log does not hold (a class name is looked up in the folder's config.json and labels.csv; a row or
    file that cannot be read counts too) and the command that applies them, or "" when there are none."""
    notes = []
    for folder in map(pathlib.Path, folders):
        path = folder / CORRECTIONS
        if not path.exists():
            continue
        now = current_labels(folder)
        names, paths = _class_numbers(folder), ids_are_paths(folder)
        try:
            rows = read_table(path, ("id", "label"), "give the header row id,label").rows
        except (OracleError, OSError) as error:
            notes.append(f"{path} cannot be read ({error})")
            continue
        unapplied = []
        for _, row, _ in rows:
            sample_id, text = ids_lib.parse(row.get("id"), paths, now), (row.get("label") or "").strip()
            label = whole_number(text) if whole_number(text) is not None else names.get(text.casefold())
            if sample_id is None or label is None or (sample_id in now and now[sample_id] != label):
                unapplied.append(row.get("id") if sample_id is None else sample_id)
        if unapplied:
            shown = shown_ids(unapplied) if all(isinstance(i, str if paths else int) for i in unapplied) else unapplied
            notes.append(f"{path} has {len(unapplied)} row(s) this finished run has not applied (ids {shown})")
    if not notes:
        return ""
    return f" {'; '.join(notes)}: apply them to its oracle log and labels.csv with {RELABEL.format(workdir)}."


def ids_are_paths(folder) -> bool:
    """Whether the run in `folder` names its samples by file path: its oracle log holds string ids, or (no label
    logged yet) its pinned config reads a folder of images."""
    for line in checkpoint.read_jsonl(pathlib.Path(folder) / ORACLE_LOG):
        return isinstance(line.get("id"), str)
    try:
        return (json.loads((pathlib.Path(folder) / CONFIG).read_text()).get("data") or {}).get("name") == "folder"
    except (OSError, ValueError, AttributeError):
        return False


def _class_numbers(folder: pathlib.Path) -> dict:
    """{class name (lower case): class} as far as the folder's config.json (data.class_names) and labels.csv
    (label and class_name columns) tell, without the data."""
    numbers = {}
    try:
        pinned = json.loads((folder / CONFIG).read_text())
        names = (pinned.get("data") or {}).get("class_names") or ""
        numbers.update({name.strip().casefold(): c for c, name in enumerate(names.split(",")) if names})
    except (OSError, ValueError):
        pass
    try:
        with open(folder / LABELS, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row.get("class_name") and whole_number(row.get("label") or "") is not None:
                    numbers.setdefault(row["class_name"].strip().casefold(), whole_number(row["label"]))
    except (OSError, ValueError, csv.Error):
        pass
    return numbers


class Ledger:
    """One seed's labels from its oracle (process 0's; None on the others) for the pool samples whose ids are
    `pool_ids` [N]: rows of the user's file (ints) or files' paths (strs)."""

    def __init__(self, folder: pathlib.Path, oracle: Optional[Oracle], pool_ids: np.ndarray, num_classes: int,
                 class_names: Optional[Sequence[str]], collective):
        self.folder, self.oracle = folder, oracle
        self.path_ids = ids_lib.are_paths(pool_ids)  # the ids are files' paths (strs), not rows (ints)
        self.pool_ids = (np.asarray(ids_lib.plain_ids(pool_ids), object) if self.path_ids else
                         np.asarray(pool_ids, np.int64))
        self.num_classes, self.class_names = num_classes, class_names
        self.collective = collective
        self._warned: Optional[set] = None  # the warnings given in this run folder (WARNED), read when first needed

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
        An oracle that stops with part of the answers (a partly answered answers.csv: the error's `kept`) has that
        part logged too, so the next start asks only for the rest.
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
                failure = self._keep_part(iteration, error, ask)
        self.collective.settle(failure, LabelsPending)
        return (self.collective.from_leader(bought, len(indices)),
                self.collective.from_leader(labels, len(indices)))

    def _keep_part(self, iteration: int, error: Exception, ask: np.ndarray) -> Exception:
        """Logs the answers an oracle that stopped with `error` gave for part of `ask` (its `kept`: pool indices,
        labels); returns the error to stop with."""
        where, labels = getattr(error, "kept", (np.zeros(0, np.int64), np.zeros(0, np.int32)))
        where, labels = np.asarray(where, np.int64), np.asarray(labels, np.int32)
        chosen = np.isin(where, ask)
        if not chosen.any():
            return error
        try:
            log_labels(self.folder, iteration, where[chosen], labels[chosen], self.pool_ids[where[chosen]])
        except Exception as log_error:  # pylint: disable=broad-except
            return log_error
        return error

    def correct(self, iteration: int, ground_truth: np.ndarray) -> np.ndarray:
        """The ground truth [N] with the folder's corrections.csv (id,label) applied to labels bought earlier, each
        change logged as a correction; warns, once per run folder, about rows for labels never bought and about
        answers.csv rows edited after the run took them."""
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
        position = {ids_lib.plain(i): p for p, i in enumerate(self.pool_ids)}
        corrections = read_corrections(path, self.num_classes, self.class_names,
                                       paths=self.path_ids, known=position)
        changes = []
        for sample_id, label in corrections.items():
            where, shown = position.get(sample_id), ids_lib.show(sample_id)
            if where is None:
                self._warn_once(f"unbought {sample_id}", "%s: id %s is not a sample of the pool, so it has no label "
                                "to correct; the row is ignored.", path, shown)
            elif ground_truth[where] < 0:
                self._warn_once(f"unbought {sample_id}", "%s: id %s has no label the oracle gave (corrections apply "
                                "to bought labels); the row is ignored until the run buys that label.", path, shown)
            elif ground_truth[where] != label:
                logging.warning("Correcting the label of id %s from %d to %d (%s).", shown, ground_truth[where],
                                label, path)
                changes.append((where, sample_id, label))
        return changes

    def _warn_about_edited_answers(self) -> None:
        """Warns (once per run folder and edit) about an answer of a finished round's answers.csv that is not the
        label the oracle gave when the run took the file, unless the run already uses it (a correction)."""
        given, in_use = oracle_answers(self.folder), current_labels(self.folder)
        for sample_id, label, answers in self.oracle.edited_answers(given):
            used = in_use.get(sample_id, given[sample_id])
            if used == label:
                continue  # corrections.csv already gives it this label
            uses = (f"read {given[sample_id]} then and uses {used}, the label {CORRECTIONS} gives it"
                    if used != given[sample_id] else f"uses the label {used} it read then")
            self._warn_once(
                f"edited {answers.relative_to(self.folder) if self.folder in answers.parents else answers} "
                f"{sample_id} {label}",
                "%s now gives id %s the label %d, but the run took this file before the edit and %s. To use %d, put "
                "the row '%s' in %s (columns id,label; it replaces any row of id %s there): it is applied at the "
                "next iteration.", answers, ids_lib.show(sample_id), label, uses, label,
                ids_lib.csv_row([sample_id, label]), self.folder / CORRECTIONS, ids_lib.show(sample_id))

    def _warn_once(self, key: str, message: str, *args) -> None:
        """Logs the warning `message % args` unless this run folder has given the warning `key` before (a resume
        does not repeat it); remembers it in the folder's WARNED file."""
        if self._warned is None:
            try:
                self._warned = set(json.loads((self.folder / WARNED).read_text()))
            except (OSError, ValueError, TypeError):  # none yet (or unreadable: then a warning may come again)
                self._warned = set()
        if key in self._warned:
            return
        logging.warning(message, *args)
        self._warned.add(key)
        checkpoint.write_json(self.folder / WARNED, sorted(self._warned))
