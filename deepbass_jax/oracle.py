"""Oracles answer line 9 of Algorithm 3.1: the ground truth g' of queried pool samples.

`SimulatedOracle` reveals labels held back from the driver; `FileOracle` asks a person through PNG files
and a CSV. The driver reaches hidden labels only through an oracle (metrics aside).
"""

from __future__ import annotations

import csv
import io
import pathlib
import time
from typing import Optional, Protocol

import numpy as np
from absl import logging

from deepbass_jax import checkpoint


class Oracle(Protocol):
    def label(self, indices: np.ndarray, images: np.ndarray) -> np.ndarray:
        """Ground truth [n] int for pool samples `indices` [n] (their `images` [n, ...] are for display)."""

    def replay(self, indices: np.ndarray, labels: np.ndarray) -> None:
        """Takes note of answers it gave before an interruption (read back from the oracle log), so that its
        state is what an uninterrupted run would have; nothing is asked."""

    def state_dict(self) -> dict:
        """What a checkpoint must hold to resume the oracle."""

    def load_state_dict(self, state: dict) -> None:
        ...


class OracleError(ValueError):
    """An oracle was asked something it cannot answer, or answered something invalid."""


class SimulatedOracle:
    """Reveals held-back labels and counts queries; asking for a sample twice is an error."""

    def __init__(self, hidden_labels: np.ndarray):
        self._hidden_labels = np.asarray(hidden_labels)
        self._asked = np.zeros(self._hidden_labels.shape[0], bool)

    @property
    def num_queries(self) -> int:
        return int(self._asked.sum())

    def label(self, indices: np.ndarray, images: Optional[np.ndarray] = None) -> np.ndarray:
        indices = np.asarray(indices, np.int64)
        if len(np.unique(indices)) != len(indices) or self._asked[indices].any():
            raise OracleError(f"sample(s) {indices[self._asked[indices]].tolist()} were already labeled.")
        self._asked[indices] = True
        return self._hidden_labels[indices].astype(np.int32)

    def replay(self, indices: np.ndarray, labels: np.ndarray) -> None:
        self._asked[np.asarray(indices, np.int64)] = True

    def state_dict(self) -> dict:
        return {"asked": self._asked.copy()}

    def load_state_dict(self, state: dict) -> None:
        self._asked = np.asarray(state["asked"], bool).copy()


class LabelsPending(Exception):
    """A person has not answered a FileOracle query yet; the run stops and resumes when they have."""


class FileOracle:
    """Asks a person: writes each query as PNG images and a CSV, then reads the filled-in CSV.

    For query round r it writes `<directory>/round_<r>/<pool index>.png` and `queries.csv` with columns
    `id,image,label` (label empty). The person fills in `label` (an integer in [0, num_classes)) and saves
    the file as `answers.csv` in the same folder. With `wait_seconds > 0` the oracle polls for it; otherwise
    it raises `LabelsPending`, and running the same command again continues from there. Valid rows are
    kept across attempts, so a partly wrong answer file loses nothing.
    """

    def __init__(self, directory, num_classes: int, wait_seconds: float = 0.0, poll_seconds: float = 2.0):
        self.directory = pathlib.Path(directory)
        self.num_classes = num_classes
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self._round = 0
        self._accepted: dict[int, int] = {}  # answers of the open round, kept across invalid attempts

    def label(self, indices: np.ndarray, images: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, np.int64)
        folder = self.directory / f"round_{self._round:04d}"
        answers_path = folder / "answers.csv"
        if not (folder / "queries.csv").exists():
            _write_query(folder, indices, images)
            logging.info("FileOracle: %d images to label in %s; save the filled CSV as %s.",
                         len(indices), folder, answers_path)
        deadline = time.monotonic() + self.wait_seconds
        while not answers_path.exists():
            if time.monotonic() >= deadline:
                raise LabelsPending(
                    f"{len(indices)} samples wait for labels: open {folder / 'queries.csv'}, fill in the "
                    f"'label' column with integers in [0, {self.num_classes}), save it as {answers_path}, "
                    "and run the same command again."
                )
            time.sleep(self.poll_seconds)
        self._accepted.update(self._read_answers(answers_path, indices))
        missing = [int(i) for i in indices if int(i) not in self._accepted]
        if missing:
            raise OracleError(f"{answers_path}: no valid label yet for ids {missing}; add them and run again.")
        labels = np.array([self._accepted[int(i)] for i in indices], np.int32)
        self._round += 1
        self._accepted = {}
        return labels

    def _read_answers(self, path: pathlib.Path, indices: np.ndarray) -> dict[int, int]:
        """Valid rows of an answer file; raises OracleError naming every invalid row after keeping the rest."""
        expected = {int(i) for i in indices}
        valid: dict[int, int] = {}
        problems = []
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [column for column in ("id", "label") if column not in (reader.fieldnames or [])]
            if missing:
                raise OracleError(
                    f"{path}: the header row lacks the column(s) {missing} (found {reader.fieldnames}); start from "
                    f"{path.parent / 'queries.csv'}, which has the header id,image,label, and fill in 'label'."
                )
            for row_number, row in enumerate(reader, start=2):
                problem = self._check_row(row, expected, valid)
                if problem:
                    problems.append(f"row {row_number}: {problem}")
                else:
                    valid[int(row["id"])] = int(row["label"])
        if problems:
            self._accepted.update(valid)
            raise OracleError(
                f"{path} has invalid answers (valid rows kept: {len(valid)}):\n  " + "\n  ".join(problems)
                + "\nCorrect these rows and run the same command again."
            )
        return valid

    def _check_row(self, row: dict, expected: set, seen: dict) -> Optional[str]:
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
        if not (row.get("label") or "").strip():
            return f"id {sample_id} has no label"
        try:
            label = int(row.get("label") or "")
        except ValueError:
            return f"label {row.get('label')!r} of id {sample_id} is not an integer"
        if not 0 <= label < self.num_classes:
            return f"label {label} of id {sample_id} is outside [0, {self.num_classes})"
        return None

    def replay(self, indices: np.ndarray, labels: np.ndarray) -> None:
        """The answers of the open round were logged before an interruption: that round is done."""
        self._round += 1
        self._accepted = {}

    def state_dict(self) -> dict:
        return {"round": self._round}

    def load_state_dict(self, state: dict) -> None:
        self._round = int(state["round"])


def _write_query(folder: pathlib.Path, indices: np.ndarray, images: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, image in zip(indices, images):
        name = f"{int(index)}.png"
        picture = np.asarray(image)
        if picture.ndim == 3 and picture.shape[-1] == 1:
            picture = picture[..., 0]
        if picture.ndim == 1:  # a feature vector: show it as a one-row strip
            picture = picture[None, :]
        plt.imsave(folder / name, picture, cmap="gray" if picture.ndim == 2 else None)
        rows.append({"id": int(index), "image": name, "label": ""})
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=["id", "image", "label"])
    writer.writeheader()
    writer.writerows(rows)
    checkpoint.atomic_write_bytes(folder / "queries.csv", table.getvalue().encode())
