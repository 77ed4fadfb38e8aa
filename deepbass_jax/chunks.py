"""Fixed-size padded chunks, so that jitted per-chunk functions compile once."""

from __future__ import annotations

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
