"""The oracle of a person: `FileOracle` writes each query round into a folder and reads the answers back."""

from __future__ import annotations

import csv
import pathlib
import time
from typing import Optional, Sequence

import numpy as np
from absl import logging

from deepbass_jax.oracle import LabelsPending, OracleError, rounds


class FileOracle:
    """Asks a person: each query round gets a folder with the samples to label, and reads the answers back.

    Round r writes `<directory>/round_<r>/` (see `rounds.write_round`): `index.html`, a labeling page that needs
    no server (click or type the class, then save answers.csv), `<id>.png` per sample (vector data: a plot
    placing it among the labeled points, and its coordinates in the CSV), `classes.csv` and `queries.csv` with
    columns `id,image,...,label`. Ids are the rows of the user's file. The person saves the answers as
    `answers.csv` (columns `id,label`; a label is a class number in [0, num_classes) or a class name) in the
    same folder.

    Without waiting (`wait_seconds` 0) a missing answer file raises `LabelsPending` and running the same command
    again continues; valid rows of a partly wrong file are kept across attempts. With `wait_seconds` > 0 the
    oracle polls and takes answers.csv only once it is complete (every id labeled, every label valid): a copy of
    queries.csv being filled in, or a file with a wrong row, is waited on, with a message, until the deadline.
    """

    def __init__(self, directory, num_classes: int, wait_seconds: float = 0.0, poll_seconds: float = 2.0,
                 class_names: Optional[Sequence[str]] = None, value_range: tuple[float, float] = (0.0, 1.0)):
        self.directory = pathlib.Path(directory)
        self.num_classes = num_classes
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.class_names = None if class_names is None else tuple(class_names)
        self.value_range = value_range
        self._round = 0
        self._accepted: dict[int, int] = {}  # id -> label of the open round, kept across invalid attempts

    def label(self, indices: np.ndarray, images: np.ndarray, ids: Optional[np.ndarray] = None,
              context: Optional[dict] = None) -> np.ndarray:
        indices = np.asarray(indices, np.int64)
        ids = indices if ids is None else np.asarray(ids, np.int64)
        folder = self._folder(self._round)
        answers_path = folder / ANSWERS
        if not (folder / rounds.QUERIES).exists():
            rounds.write_round(folder, ids, images, num_classes=self.num_classes, class_names=self.class_names,
                               value_range=self.value_range, context=context)
        if self.wait_seconds > 0:
            self._wait_for_complete(answers_path, ids)
        elif not answers_path.exists():
            raise LabelsPending(
                f"{len(ids)} samples wait for labels: open {folder / rounds.PAGE} in a browser (or fill in the "
                f"'label' column of {folder / rounds.QUERIES}), save the answers as {answers_path}, and run the same "
                "command again (or pass --config.oracle_wait_seconds=3600 to have the run wait for them)."
            )
        else:
            valid, problems = self._read_answers(answers_path, ids)
            self._accepted.update(valid)
            missing = [int(i) for i in ids if int(i) not in self._accepted]
            if problems:
                raise OracleError(
                    f"{answers_path} has invalid answers (valid rows kept: {len(self._accepted)}):\n  "
                    + "\n  ".join(problems) + "\nCorrect these rows and run the same command again.")
            if missing:
                raise OracleError(f"{answers_path}: no valid label yet for ids {missing}; add them and run again.")
        labels = np.array([self._accepted[int(i)] for i in ids], np.int32)
        self._round += 1
        self._accepted = {}
        return labels

    def _folder(self, round_: int) -> pathlib.Path:
        return self.directory / f"round_{round_:04d}"

    def _wait_for_complete(self, path: pathlib.Path, ids: np.ndarray) -> None:
        """Polls until `path` answers every id validly (then self._accepted holds them) or the deadline passes."""
        deadline = time.monotonic() + self.wait_seconds
        logging.warning("Waiting up to %.0f s for the labels of %d samples: open %s in a browser (or fill in %s), and "
                        "save the answers as %s.", self.wait_seconds, len(ids), path.parent / rounds.PAGE,
                        path.parent / rounds.QUERIES, path)
        said = None
        while True:
            if path.exists():
                try:
                    valid, problems = self._read_answers(path, ids, final=False)
                except (OracleError, OSError, UnicodeDecodeError, csv.Error) as error:  # e.g. half written
                    valid, problems = {}, [str(error)]
                missing = [int(i) for i in ids if int(i) not in valid]
                if not problems and not missing:
                    self._accepted = valid
                    return
                news = ("\n  ".join(problems) if problems else
                        f"{len(ids) - len(missing)} of {len(ids)} samples labeled so far")
                if news != said:
                    logging.warning("%s is not complete yet, waiting: %s", path, news)
                    said = news
            if time.monotonic() >= deadline:
                raise LabelsPending(
                    f"no complete {path} within {self.wait_seconds:.0f} s: label every sample (open "
                    f"{path.parent / rounds.PAGE}), save the answers as {path}, and run the same command again."
                )
            time.sleep(self.poll_seconds)

    def parse_label(self, text: str) -> Optional[int]:
        return parse_label(text, self.num_classes, self.class_names)

    def _read_answers(self, path: pathlib.Path, ids: np.ndarray,
                      final: bool = True) -> tuple[dict[int, int], list[str]]:
        """({id: label} of the valid rows, a line per invalid row) of an answer file. `final`: the file is taken as
        it is, so an empty label is a problem too (else it is a row not answered yet). A file without the id and
        label columns raises OracleError."""
        expected = {int(i) for i in ids}
        valid: dict[int, int] = {}
        problems = []
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [column for column in ("id", "label") if column not in (reader.fieldnames or [])]
            if missing:
                raise OracleError(
                    f"{path}: the header row lacks the column(s) {missing} (found {reader.fieldnames}); start from "
                    f"{path.parent / rounds.QUERIES}, which has the header row, and fill in 'label'."
                )
            for row_number, row in enumerate(reader, start=2):
                problem = self._check_row(row, expected, valid, final)
                if problem:
                    problems.append(f"row {row_number}: {problem}")
                elif (row.get("label") or "").strip():
                    valid[int(row["id"])] = self.parse_label(row["label"])
        return valid, problems

    def _check_row(self, row: dict, expected: set, seen: dict, final: bool) -> Optional[str]:
        """Why `row` is invalid, or None (an empty label is only invalid in a `final` file)."""
        if any(extra.strip() for extra in row.get(None) or []):  # csv.DictReader puts surplus fields under None
            return f"{len(row) - 1 + len(row[None])} fields where the header has {len(row) - 1} (a comma too many?)"
        try:
            sample_id = int(row.get("id") or "")
        except ValueError:
            return f"id {row.get('id')!r} is not an integer"
        if sample_id not in expected:
            return f"id {sample_id} was not asked in this round"
        if sample_id in seen:
            return f"id {sample_id} is answered twice"
        text = (row.get("label") or "").strip()
        if not text:
            return f"id {sample_id} has no label" if final else None
        if self.parse_label(text) is None:
            names = f" or one of the names {', '.join(self.class_names)}" if self.class_names else ""
            return f"label {text!r} of id {sample_id} is not a class: give a number in [0, {self.num_classes}){names}"
        return None

    def edited_answers(self, logged: dict[int, int]) -> list[tuple[int, int, pathlib.Path]]:
        """(id, label now in the file, file) for each answer of a finished round that differs from the label
        logged for it (`logged`: {id: label} as used): an edit made after the run took the file."""
        edits = []
        for round_ in range(self._round):
            path = self._folder(round_) / ANSWERS
            if path.exists():
                try:
                    valid, _ = self._read_answers(path, np.array(list(logged), np.int64), final=False)
                except (OracleError, OSError, UnicodeDecodeError, csv.Error):
                    continue  # an unreadable file changes no label
                edits += [(i, label, path) for i, label in valid.items() if logged.get(i) != label]
        return edits

    def replay(self, indices: np.ndarray, labels: np.ndarray) -> None:
        """The answers of the open round were logged before an interruption: that round is done."""
        self._round += 1
        self._accepted = {}

    def state_dict(self) -> dict:
        return {"round": self._round}

    def load_state_dict(self, state: dict) -> None:
        self._round = int(state["round"])


ANSWERS = "answers.csv"


def parse_label(text: str, num_classes: int, class_names: Optional[Sequence[str]] = None) -> Optional[int]:
    """A class number in [0, num_classes) or (case aside) a class name -> the class; None if it is neither."""
    text = text.strip()
    try:
        label = int(text)
    except ValueError:
        names = [name.casefold() for name in class_names or ()]
        return names.index(text.casefold()) if text and text.casefold() in names else None
    return label if 0 <= label < num_classes else None
