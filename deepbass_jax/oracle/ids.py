"""Sample ids as a person and a script see them: opaque keys, either ints (a row of the user's file: npz, IDX,
toy) or strs (a folder of images: each file's path relative to the folder, POSIX). One run has one kind.

A CSV cell is read by the kind of the ids expected, never guessed from its text: "12" or "007.png" may be a file
name. A path is taken exactly as the CSV holds it (the csv module's quoting keeps commas, quotes and blanks); only
when that text is no id expected but the text without surrounding blanks is (a spreadsheet's padding) is that one
taken.
"""

from __future__ import annotations

import csv
import io
from typing import Collection, Iterable, Optional, Union

import numpy as np

SampleId = Union[int, str]


def plain(sample_id) -> SampleId:
    """A Python int or str of one id (a numpy integer or string too), as JSON and dict keys hold it."""
    return str(sample_id) if isinstance(sample_id, (str, np.str_)) else int(sample_id)


def plain_ids(ids: Iterable) -> list:
    """[n] Python ints or strs of `ids` [n] (a numpy array of either kind, a tuple or list)."""
    return [plain(i) for i in (np.asarray(ids, object).reshape(-1) if isinstance(ids, np.ndarray) else ids)]


def are_paths(ids: Iterable) -> bool:
    """Whether `ids` are file paths (strs) rather than rows (ints); False for no ids."""
    return any(isinstance(i, (str, np.str_)) for i in (np.asarray(ids, object).reshape(-1)
                                                        if isinstance(ids, np.ndarray) else ids))


def parse(text: Optional[str], paths: bool, known: Collection = ()) -> Optional[SampleId]:
    """The id a CSV cell `text` writes, by the run's kind: a whole number (`7`, `7.0`, `7,0`) for rows, the exact
    text for `paths` (that text stripped of surrounding blanks when only that one is among `known`); None for no
    id (not a whole number; a blank path)."""
    from deepbass_jax.oracle.files import whole_number  # files imports this module

    if not paths:
        return whole_number(text or "")
    text = text or ""
    if not text.strip():
        return None
    return text.strip() if text not in known and text.strip() in known else text


def not_an_id(text: Optional[str], paths: bool) -> str:
    """Why the cell `text` is no id, for a row's complaint (`parse` gave None)."""
    return "the id is empty" if paths else f"id {text!r} is not an integer"


def show(sample_id: SampleId) -> str:
    """An id as a message shows it: a row's number as it is (917), a path quoted ('cats/a, b.png')."""
    return repr(sample_id) if isinstance(sample_id, str) else str(sample_id)


def csv_row(fields: Iterable) -> str:
    """One CSV line (no line end) of `fields`, quoted as the csv module quotes (a path with a comma or a quote)."""
    line = io.StringIO(newline="")
    csv.writer(line, lineterminator="").writerow(list(fields))
    return line.getvalue()
