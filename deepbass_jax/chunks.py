"""Fixed-size padded chunks, so that jitted per-chunk functions compile once."""

from __future__ import annotations

from typing import Iterator

import jax.numpy as jnp
import numpy as np


def pad_rows(piece, size: int, axis: int = 0) -> jnp.ndarray:
    """piece (numpy or device) zero-padded along `axis` to `size` rows -> a device array. A host piece is padded
    on the host before it is sent: every send then has the one shape of a full chunk, so no transfer or padding
    op is compiled anew for each shape a last chunk takes (ground-truth sets grow with every acquisition)."""
    missing = size - piece.shape[axis]
    if missing <= 0:
        return jnp.asarray(piece)
    widths = [(0, 0)] * piece.ndim
    widths[axis] = (0, missing)
    if isinstance(piece, np.ndarray):
        return jnp.asarray(np.pad(piece, widths))
    return jnp.pad(piece, widths)


def padded_chunks(array, chunk_size: int, axis: int = 0) -> Iterator[tuple[int, jnp.ndarray, int]]:
    """Yields (start, chunk of `chunk_size` rows along `axis` (0 or 1), number of real rows) over `array`; the last
    chunk is zero-padded by `pad_rows`. `array` is anything whose slices give arrays (numpy, device, memmap, a
    lazy pool); along axis 0 it is sliced with one plain slice."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
    for start in range(0, array.shape[axis], chunk_size):
        piece = array[start: start + chunk_size] if axis == 0 else array[:, start: start + chunk_size]
        yield start, pad_rows(piece, chunk_size, axis), piece.shape[axis]
