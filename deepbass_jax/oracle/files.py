"""The oracle of a person: `FileOracle` writes each query round into a folder and reads the answers back.

Answer files (answers.csv, corrections.csv) are read as spreadsheets save them (`read_table`): UTF-8 with or
without a byte-order mark (Excel's "CSV UTF-8") or UTF-16 (Excel's "Unicode Text"), fields separated by commas,
semicolons (European locales) or tabs, and a class number may be written as a whole decimal (`2.0`, `2,0`).
"""

from __future__ import annotations

import codecs
import csv
import io
import pathlib
import re
import time
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np
from absl import logging

from deepbass_jax.oracle import LabelsPending, OracleError, ids as ids_lib, rounds

ANSWERS = "answers.csv"
SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab"}  # what separates the fields of an answer file
READ_SEPARATORS = "a comma, a semicolon or a tab"
SHOWN_IDS = 20  # a message lists at most this many ids
# What happens to a partly answered answers.csv, in the run's message and on the labeling page (page/page.js).
KEEPS_ANSWERS = "The run keeps the answers given and asks only for the rest"


class AnswersIncomplete(LabelsPending):
    """answers.csv labels only some of the samples asked; `kept` = (pool indices [k], labels [k]) of its valid
    answers, which the ledger logs, so that the run asks only for the rest."""

    def __init__(self, message: str, kept: tuple[np.ndarray, np.ndarray]):
        super().__init__(message)
        self.kept = kept


class AnswersInvalid(OracleError):
    """answers.csv has invalid rows; `kept` = (pool indices [k], labels [k]) of its valid answers, which the
    ledger logs, so that the run asks only for the rest."""

    def __init__(self, message: str, kept: tuple[np.ndarray, np.ndarray]):
        super().__init__(message)
        self.kept = kept


class FileOracle:
    """Asks a person: each query round gets a folder with the samples to label, and reads the answers back.

    Round r writes `<directory>/round_<r>/` (see `rounds.write_round`): `index.html`, a labeling page that needs no
    server (click or type the class, then save answers.csv), a PNG per sample (`rounds.png_names`; vector data: a
    plot placing it among the labeled points, and its coordinates in the CSV), `classes.csv` and `queries.csv` with
    columns `id,image,...,label`. Ids are the rows of the user's file (ints), or for a folder of images each file's
    path relative to it (strs: `path_ids`; see `ids`). The person saves the answers as `answers.csv` (columns
    `id,label`; a label is a class number in [0, num_classes) or a class name; see `read_table` for the spreadsheet
    formats read) in the same folder.

    Without waiting (`wait_seconds` 0) a missing answer file raises `LabelsPending` and running the same command
    again continues. A partly answered file (some samples unlabeled: `AnswersIncomplete`, a `LabelsPending`) or
    one with invalid rows (`AnswersInvalid`, an `OracleError`) carries its valid answers (`kept`): the ledger logs
    them, and the next start asks, in the same round folder, only for the rest (`replay` leaves a partly logged
    round open), so a later answers.csv may hold every row of the round or just the missing ones. With
    `wait_seconds` > 0 the oracle polls and takes answers.csv only once it is complete (every id labeled, every
    label valid): a copy of queries.csv being filled in, or a file with a wrong row, is waited on, with a message,
    until the deadline.
    """

    def __init__(self, directory, num_classes: int, wait_seconds: float = 0.0, poll_seconds: float = 2.0,
                 class_names: Optional[Sequence[str]] = None, value_range: tuple[float, float] = (0.0, 1.0),
                 path_ids: bool = False):
        self.directory = pathlib.Path(directory)
        self.path_ids = path_ids  # ids are file paths (strs), else rows (ints); the ids asked tell too
        self.num_classes = num_classes
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.class_names = None if class_names is None else tuple(class_names)
        self.value_range = value_range
        self._round = 0
        self._accepted: dict = {}  # id -> label of the open round, kept across invalid attempts

    def label(self, indices: np.ndarray, images: np.ndarray, ids: Optional[np.ndarray] = None,
              context: Optional[dict] = None) -> np.ndarray:
        indices = np.asarray(indices, np.int64)
        ids = ids_lib.plain_ids(indices if ids is None else ids)
        self.path_ids = ids_lib.are_paths(ids) if ids else self.path_ids
        folder = self._folder(self._round)
        answers_path = folder / ANSWERS
        if not (folder / rounds.QUERIES).exists():
            rounds.write_round(folder, ids, images, num_classes=self.num_classes, class_names=self.class_names,
                               value_range=self.value_range, context=context)
        round_ids = self._round_ids(self._round)
        if self.wait_seconds > 0:
            self._wait_for_complete(answers_path, indices, ids, round_ids)
        elif not answers_path.exists():
            raise LabelsPending(
                f"{len(ids)} samples wait for labels: open {folder / rounds.PAGE} in a browser (or fill in the "
                f"'label' column of {folder / rounds.QUERIES}), save the answers as {answers_path}, and run the same "
                "command again (or pass --config.oracle_wait_seconds=3600 to have the run wait for them)."
            )
        else:
            valid, problems = self._read_answers(answers_path, ids, round_ids=round_ids)
            self._accepted.update(valid)
            missing = [i for i in ids if i not in self._accepted]
            kept = self._kept(indices, ids)
            if problems:
                unlabeled = f" {len(missing)} samples still have no valid label." if missing else ""
                raise AnswersInvalid(
                    f"{answers_path} has invalid answers (valid rows kept: {len(kept[0])}): " + "; ".join(problems)
                    + f".{unlabeled} Correct these rows and run the same command again. The valid answers are kept: "
                    "a file with just the corrected rows also does.", kept)
            if missing:
                raise AnswersIncomplete(self._incomplete_message(answers_path, missing, round_ids, len(kept[0])),
                                        kept)
        labels = np.array([self._accepted[i] for i in ids], np.int32)
        self._round += 1
        self._accepted = {}
        return labels

    def _folder(self, round_: int) -> pathlib.Path:
        return self.directory / f"round_{round_:04d}"

    def _round_ids(self, round_: int) -> Optional[list]:
        """The ids round `round_` asked (its queries.csv), or None before it was written."""
        path = self._folder(round_) / rounds.QUERIES
        if not path.exists():
            return None
        ids = []
        afresh = f"the run writes it: delete {path} and run the same command again to have it written afresh"
        for number, row, _ in read_table(path, ("id",), afresh).rows:
            sample_id = ids_lib.parse(row.get("id"), self.path_ids)
            if sample_id is None:
                raise OracleError(f"{path}, row {number}: {ids_lib.not_an_id(row.get('id'), self.path_ids)}; "
                                  f"{afresh}.")
            ids.append(sample_id)
        return ids

    def _kept(self, indices: np.ndarray, ids: list) -> tuple[np.ndarray, np.ndarray]:
        """(pool indices [k], labels [k]) of the samples asked now (`ids` [n]) that have an accepted answer."""
        have = [k for k, i in enumerate(ids) if i in self._accepted]
        return (indices[have], np.array([self._accepted[ids[k]] for k in have], np.int32))

    def _incomplete_message(self, path: pathlib.Path, missing: list, round_ids: Optional[list], kept: int) -> str:
        """What a partly answered answers.csv means and what to do: the same as the labeling page says."""
        total = len(round_ids) if round_ids else len(missing) + kept
        return (f"{path}: {len(missing)} of the {total} samples of {path.parent.name} have no label yet "
                f"(ids {shown_ids(missing)}). {KEEPS_ANSWERS}: label them on the same page, "
                f"{path.parent / rounds.PAGE} (they show as 'not labeled'), save answers.csv into {path.parent} "
                "again (the page saves every label it holds; a file with just the rest also does), and run the same "
                "command again.")

    def _wait_for_complete(self, path: pathlib.Path, indices: np.ndarray, ids: list,
                           round_ids: Optional[list]) -> None:
        """Polls until `path` answers every id validly (then self._accepted holds them) or the deadline passes;
        at the deadline the valid answers of a partly answered file are kept (`AnswersIncomplete`)."""
        deadline = time.monotonic() + self.wait_seconds
        logging.warning("Waiting up to %.0f s for the labels of %d samples: open %s in a browser (or fill in %s), and "
                        "save the answers as %s.", self.wait_seconds, len(ids), path.parent / rounds.PAGE,
                        path.parent / rounds.QUERIES, path)
        said, valid = None, {}
        while True:
            if path.exists():
                try:
                    valid, problems = self._read_answers(path, ids, final=False, round_ids=round_ids)
                except (OracleError, OSError, csv.Error) as error:  # e.g. half written
                    valid, problems = {}, [str(error)]
                missing = [i for i in ids if i not in valid]
                if not problems and not missing:
                    self._accepted = valid
                    return
                news = ("; ".join(problems) if problems else
                        f"{len(ids) - len(missing)} of {len(ids)} samples labeled so far")
                if news != said:
                    logging.warning("%s is not complete yet, waiting: %s", path, news)
                    said = news
            if time.monotonic() >= deadline:
                message = (f"no complete {path} within {self.wait_seconds:.0f} s: label every sample (open "
                           f"{path.parent / rounds.PAGE}), save the answers as {path}, and run the same command again.")
                if valid:
                    self._accepted.update(valid)
                    kept = self._kept(indices, ids)
                    raise AnswersIncomplete(f"{message} The valid answers in it ({len(kept[0])}) are kept: the run "
                                            "asks only for the rest.", kept)
                raise LabelsPending(message)
            time.sleep(self.poll_seconds)

    def parse_label(self, text: str) -> Optional[int]:
        return parse_label(text, self.num_classes, self.class_names)

    def _read_answers(self, path: pathlib.Path, ids: Sequence, final: bool = True,
                      round_ids: Optional[Sequence] = None) -> tuple[dict, list[str]]:
        """({id: label} of the valid rows, a line per invalid row) of an answer file for the samples `ids`.
        `final`: the file is taken as it is, so an empty label is a problem too (else it is a row not answered
        yet). Rows of other ids of the round (`round_ids`: answered before, their answers kept) are passed over.
        A file without the id and label columns raises OracleError."""
        expected = set(ids_lib.plain_ids(ids))
        others = set(round_ids or ()) - expected
        valid: dict = {}
        seen: set = set()
        problems = []
        table = read_table(path, ("id", "label"), f"start from {path.parent / rounds.QUERIES}, which has the header "
                           "row, and fill in 'label'")
        for number, row, surplus in table.rows:
            sample_id = ids_lib.parse(row.get("id"), self.path_ids, expected | others)
            if sample_id in others:
                continue
            problem = self._check_row(row, sample_id, surplus, table, expected, seen, final)
            if problem:
                problems.append(f"row {number}: {problem}")
            elif (row.get("label") or "").strip():
                valid[sample_id] = self.parse_label(row["label"])
        return valid, problems

    def _check_row(self, row: dict, sample_id, surplus: list, table: "Table", expected: set, seen: set,
                   final: bool) -> Optional[str]:
        """Why `row` (its id read as `sample_id`, None for none; with `surplus` fields beyond the header of `table`)
        is invalid, or None (an empty label is only invalid in a `final` file)."""
        if any(extra.strip() for extra in surplus):
            return (f"{table.width + len(surplus)} fields where the header has {table.width} (a "
                    f"{SEPARATORS[table.separator]} too many?)")
        if sample_id is None:
            return ids_lib.not_an_id(row.get("id"), self.path_ids)
        if sample_id not in expected:
            return f"id {ids_lib.show(sample_id)} was not asked in this round"
        if sample_id in seen:
            return f"id {ids_lib.show(sample_id)} is answered twice"
        seen.add(sample_id)
        text = (row.get("label") or "").strip()
        if not text:
            return f"id {ids_lib.show(sample_id)} has no label" if final else None
        return label_problem(text, sample_id, self.num_classes, self.class_names)

    def edited_answers(self, given: dict) -> list[tuple]:
        """(id, label now in the file, file) for each answer of a finished round that differs from the label the
        oracle gave for it (`given`: {id: label} as read from the file when the run took it, corrections aside):
        an edit made after the run took the file."""
        edits = []
        for round_ in range(self._round):
            path = self._folder(round_) / ANSWERS
            if path.exists():
                try:
                    valid, _ = self._read_answers(path, list(given), final=False)
                except (OracleError, OSError, csv.Error):
                    continue  # an unreadable file changes no label
                edits += [(i, label, path) for i, label in valid.items() if given.get(i) != label]
        return edits

    def replay(self, indices: np.ndarray, labels: np.ndarray) -> None:
        """Answers of the open round were logged before the run stopped: the round is done, unless they are only
        part of it (the valid rows of a partly answered answers.csv, or a log line torn by a kill): then the rest
        is asked in the same round folder, whose answers.csv may hold every row or just the rest."""
        round_ids = self._round_ids(self._round)
        if round_ids is not None and len(indices) < len(round_ids):
            return
        self._round += 1
        self._accepted = {}

    def state_dict(self) -> dict:
        return {"round": self._round}

    def load_state_dict(self, state: dict) -> None:
        self._round = int(state["round"])


# ------------------------------------------------------------------------------------------------ reading
class Table(NamedTuple):
    """A CSV file as `read_table` reads it."""

    separator: str  # "," ";" or "\t"
    width: int  # fields in the header row
    rows: list[tuple[int, dict, list]]  # (row number, {column: text or None}, surplus fields) per non-blank row


def read_table(path, columns: Sequence[str], remedy: str) -> Table:
    """The rows of a CSV file as spreadsheets save it: UTF-8 with or without a byte-order mark, or UTF-16
    with one; fields separated by a comma, a semicolon or a tab, whichever makes the header row name every one of
    `columns` (names compared without surrounding blanks and case). Each row: (its row number in the file, as a
    spreadsheet numbers it, {column name (stripped, lower case): text or None where the row is short}, the fields
    beyond the header's); blank rows are left out.

    Raises OracleError, in one line ending with `remedy`, for a file that is not text in those encodings or whose
    header row lacks one of `columns`.
    """
    path = pathlib.Path(path)
    raw = path.read_bytes()
    encoding = "utf-16" if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as error:
        raise OracleError(f"{path} is not UTF-8 text (byte {error.start} cannot be read): save it as 'CSV UTF-8' "
                          "(in Excel: Save As, CSV UTF-8 (Comma delimited)) or in another program with the UTF-8 "
                          "encoding, and run the same command again.") from None
    first = None
    for separator in SEPARATORS:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
        header = next((fields for fields in reader if any(f.strip() for f in fields)), [])
        names = [name.strip().casefold() for name in header]
        first = first or header
        if all(column in names for column in columns):
            rows = []
            for fields in reader:
                if any(f.strip() for f in fields):
                    row = {name: fields[k] if k < len(fields) else None for k, name in enumerate(names)}
                    rows.append((reader.line_num, row, fields[len(names):]))
            return Table(separator, len(header), rows)
    found = [name.strip() for name in first or []]
    names = [name.casefold() for name in found]
    missing = [column for column in columns if column not in names]
    hint = f" The columns are read separated by {READ_SEPARATORS}." if len(found) < 2 else ""
    raise OracleError(f"{path}: the header row lacks the column(s) {missing} (found {found}); {remedy}.{hint}")


_NUMBER = re.compile(r"[+-]?\d+(?:[.,]\d*)?")  # 2, 2.0, 2,0 (a decimal comma), 2.


def whole_number(text: str) -> Optional[int]:
    """The whole number `text` writes (`7`, `7.0`, `7,0` as a spreadsheet may save it), or None."""
    value = _decimal(text)
    return value if isinstance(value, int) else None


def _decimal(text: str) -> Union[int, str, None]:
    """The whole number `text` writes, "fraction" for a number with a fraction, or None for no number."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    whole, _, fraction = text.replace(",", ".").partition(".")
    return "fraction" if fraction.strip("0") else int(whole)


def label_problem(text: str, sample_id, num_classes: int, class_names: Optional[Sequence[str]]) -> Optional[str]:
    """Why `text` is not a label of `sample_id` (a row's complaint), or None when it names a class."""
    if parse_label(text, num_classes, class_names) is not None:
        return None
    names = f" or one of the names {', '.join(class_names)}" if class_names else ""
    kind = "a whole class number" if _decimal(text) == "fraction" else "a class"
    return (f"label {text.strip()!r} of id {ids_lib.show(sample_id)} is not {kind}: give a number in "
            f"[0, {num_classes}){names}")


def parse_label(text: str, num_classes: int, class_names: Optional[Sequence[str]] = None) -> Optional[int]:
    """A class number in [0, num_classes) (a whole decimal such as `2.0` too) or (case aside) a class name -> the
    class; None if it is neither."""
    text = text.strip()
    number = _decimal(text)
    if isinstance(number, int):
        return number if 0 <= number < num_classes else None
    if number is not None:
        return None
    names = [name.casefold() for name in class_names or ()]
    return names.index(text.casefold()) if text and text.casefold() in names else None


def shown_ids(ids: Sequence) -> str:
    """`ids` as a message shows them: the first SHOWN_IDS, then how many more."""
    ids = ids_lib.plain_ids(ids)
    more = f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
    return f"{ids[:SHOWN_IDS]}{more}"
