"""Run-directory I/O that a kill at any moment cannot corrupt: atomic writes, JSON lines, checksummed checkpoints.

- `atomic_write_bytes`: temp file + fsync + `os.replace` + fsync of the directory; a reader sees the old
  content or all of the new one, before and after a crash.
- JSON lines (metrics, oracle log) are append-only; each append is fsynced before it returns. A kill during an
  append can leave a torn last line: readers drop it with a warning (`read_jsonl`), and a resumed run cuts it
  off the file (`repair_jsonl`) before appending again. A line counts only once it ends with a newline and
  parses; anything after the last such line was not durably written.
- Checkpoints (`save` / `load`) carry a SHA-256 of their payload and keep the previous one: the newest is
  written to a temp file, then `checkpoint.msgpack` is renamed to `checkpoint.prev.msgpack` and the temp file to
  `checkpoint.msgpack`. At every instant at least one complete, verified checkpoint exists; `load_newest`
  falls back to the previous one when the newest is missing, torn or corrupted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import struct
import tempfile
from typing import Any, NamedTuple, Optional

import flax.serialization
import numpy as np
from absl import logging

from deepbass_jax.workdir import guard

MAGIC = b"DEEPBASS-CKPT-1\n"  # then: payload length (8 bytes, little endian), SHA-256 of the payload, payload
_HEADER = len(MAGIC) + 8 + 32


class CheckpointError(ValueError):
    """A checkpoint file is torn, corrupted or unreadable, or no usable checkpoint is left."""


def fsync_directory(directory) -> None:
    """Makes renames and new files in `directory` durable (a renamed file is safe only once its directory is)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _disk_full_hint(error: OSError, path) -> OSError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return OSError(error.errno, f"no space left to write {path} ({error.strerror}); the previous version is "
                                    "intact: free space and run the same command again to resume")
    return error


def _write_temporary(path: pathlib.Path, payload: bytes) -> str:
    """A fsynced temp file beside `path` holding `payload`; the caller renames or removes it."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as error:
        os.unlink(temporary)
        if isinstance(error, OSError):
            raise _disk_full_hint(error, path) from error
        raise
    return temporary


def atomic_write_bytes(path, payload: bytes) -> None:
    """Writes `payload` so that `path` holds either its old content or all of the new one, never a part."""
    path = pathlib.Path(path)
    temporary = _write_temporary(path, payload)
    try:
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    fsync_directory(path.parent)


def remove_temporaries(directory) -> list[pathlib.Path]:
    """Deletes temp files that a killed writer left in `directory` (call it only while holding the run's lock)."""
    removed = [p for p in pathlib.Path(directory).glob(".*.tmp") if p.is_file()]
    for path in removed:
        path.unlink()
    return removed


# ------------------------------------------------------------------------------------------------ JSON
def _to_json(value: Any):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(value: Any) -> str:
    return json.dumps(value, default=_to_json, sort_keys=True)


def write_json(path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, default=_to_json, indent=2, sort_keys=True) + "\n").encode())


def _parse_jsonl(path: pathlib.Path, data: bytes) -> tuple[list[dict], int]:
    """The records of JSON-lines `data` and the length of its durable prefix (a torn last line excluded).

    The piece after the last newline never counts; a last line that does not parse is torn too (a crash can
    leave a line's bytes unwritten). A damaged line with complete lines after it is not a torn append: it raises.
    """
    lines = data.split(b"\n")
    records, offset = [], 0
    for number, line in enumerate(lines[:-1], start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
                if any(rest.strip() for rest in lines[number:]):
                    raise ValueError(
                        f"{path}, line {number} is damaged ({error}) and is not the last line, so it is not a "
                        "torn append: repair or remove that line by hand, then run the same command again."
                    ) from error
                return records, offset
        offset += len(line) + 1
    return records, offset


def read_jsonl(path) -> list[dict]:
    """All durably written records; a torn last line (a kill during an append) is dropped with a warning."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    records, end = _parse_jsonl(path, data)
    if end < len(data):
        logging.warning("%s: ignoring a torn last line (the run was killed while appending it): %r",
                        path, data[end:][:120])
    return records


def repair_jsonl(path) -> Optional[bytes]:
    """Cuts a torn last line off `path` (atomically) so that appends continue on a line boundary.

    Returns the bytes cut off, or None when the file was intact.
    """
    path = pathlib.Path(path)
    if not path.exists():
        return None
    data = path.read_bytes()
    _, end = _parse_jsonl(path, data)
    if end == len(data):
        return None
    logging.warning("%s: removing a torn last line (the run was killed while appending it): %r",
                    path, data[end:][:120])
    atomic_write_bytes(path, data[:end])
    return data[end:]


def append_jsonl(path, records: list[dict]) -> None:
    """Appends one line per record and fsyncs before returning (the lines are on disk once this returns)."""
    path = pathlib.Path(path)
    lines = [(dumps(record) + "\n").encode() for record in records]
    payload = b"".join(lines)
    cut = len(payload) - len(lines[-1]) // 2 if lines else 0  # inside the last line
    created = not path.exists()
    try:
        with open(path, "ab") as handle:
            handle.write(payload[:cut])
            handle.flush()
            guard.fault_point("mid_append")  # a kill here tears the last line (tests/fault_test.py)
            handle.write(payload[cut:])
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise _disk_full_hint(error, path) from error
    if created:
        fsync_directory(path.parent)


def rewrite_jsonl(path, records: list[dict]) -> None:
    atomic_write_bytes(path, "".join(dumps(record) + "\n" for record in records).encode())


# ------------------------------------------------------------------------------------------ checkpoints
def previous_path(path) -> pathlib.Path:
    """Where `save` keeps the checkpoint before the newest: checkpoint.msgpack -> checkpoint.prev.msgpack."""
    path = pathlib.Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save(path, state: dict, keep_previous: bool = True) -> None:
    """Writes a nested dict of numpy arrays / scalars as checksummed msgpack, keeping the old file as previous.

    The order makes every instant safe: new file complete and fsynced under a temp name, then old -> previous,
    then temp -> `path`, then the directory fsynced.
    """
    path = pathlib.Path(path)
    payload = flax.serialization.msgpack_serialize(state)
    temporary = _write_temporary(path, MAGIC + struct.pack("<Q", len(payload)) + hashlib.sha256(payload).digest()
                                 + payload)
    try:
        guard.fault_point("checkpoint_written")
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
            guard.fault_point("checkpoint_rotated")  # only the previous checkpoint exists under its name here
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    fsync_directory(path.parent)


def load(path) -> dict:
    """The state `save` wrote to `path`; raises CheckpointError if the file is torn, corrupted or unreadable."""
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{path} cannot be read ({error.strerror or error})") from error
    if not data.startswith(MAGIC):  # a checkpoint from before checksums, or garbage
        try:
            state = flax.serialization.msgpack_restore(data)
        except Exception as error:  # msgpack raises several types on bad input
            raise CheckpointError(f"{path} is not a checkpoint, or is torn ({len(data)} bytes)") from error
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} is not a checkpoint ({len(data)} bytes)")
        return state
    if len(data) < _HEADER:
        raise CheckpointError(f"{path} is torn: {len(data)} bytes, shorter than its header")
    (length,) = struct.unpack("<Q", data[len(MAGIC): len(MAGIC) + 8])
    digest, payload = data[len(MAGIC) + 8: _HEADER], data[_HEADER:]
    if len(payload) != length:
        raise CheckpointError(f"{path} is torn: {len(payload)} of {length} payload bytes")
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{path} is corrupted: its SHA-256 does not match its content")
    return flax.serialization.msgpack_restore(payload)


class Restored(NamedTuple):
    state: dict
    path: pathlib.Path  # the file it came from: `path` or its previous copy
    problems: tuple  # why newer files were passed over (empty when the newest was good)


def load_newest(path) -> Optional[Restored]:
    """The newest good checkpoint among `path` and `previous_path(path)`; None when neither file exists.

    Raises CheckpointError naming both files when one exists but neither is good.
    """
    path = pathlib.Path(path)
    problems = []
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            problems.append(f"{candidate} is missing")
            continue
        try:
            return Restored(load(candidate), candidate, tuple(problems))
        except CheckpointError as error:
            problems.append(str(error))
    if not any(candidate.exists() for candidate in (path, previous_path(path))):
        return None
    raise CheckpointError(
        f"no usable checkpoint in {path.parent}: " + "; ".join(problems) + ". The oracle log there keeps every "
        "label bought: move both checkpoint files away and run the same command again to redo the run from the "
        "start without buying any logged label again."
    )


def set_aside(path) -> pathlib.Path:
    """Renames a bad checkpoint to `<name>.bad` (kept for inspection), so that the next `save` does not rotate
    it over the good previous checkpoint."""
    path = pathlib.Path(path)
    bad = path.with_name(path.name + ".bad")
    os.replace(path, bad)
    fsync_directory(path.parent)
    return bad
