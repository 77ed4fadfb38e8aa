"""Run-directory I/O: atomic writes (temp file + fsync + os.replace), JSON lines, msgpack checkpoints."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any

import flax.serialization
import numpy as np


def atomic_write_bytes(path, payload: bytes) -> None:
    """Writes `payload` so that `path` holds either its old content or all of the new one, never a part."""
    path = pathlib.Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


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


def read_jsonl(path) -> list[dict]:
    path = pathlib.Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_jsonl(path, records: list[dict]) -> None:
    """Appends one line per record and fsyncs before returning (the line is on disk once this returns)."""
    with open(path, "a") as handle:
        for record in records:
            handle.write(dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def rewrite_jsonl(path, records: list[dict]) -> None:
    atomic_write_bytes(path, "".join(dumps(record) + "\n" for record in records).encode())


def save(path, state: dict) -> None:
    """A nested dict of numpy arrays / scalars, as msgpack."""
    atomic_write_bytes(path, flax.serialization.msgpack_serialize(state))


def load(path) -> dict:
    return flax.serialization.msgpack_restore(pathlib.Path(path).read_bytes())
