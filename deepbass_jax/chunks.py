"""Fixed-size padded chunks over a leading sample axis, so jitted per-chunk functions compile once."""

from __future__ import annotations

from typing import Iterator

import jax.numpy as jnp


def padded_chunks(array, chunk_size: int) -> Iterator[tuple[int, jnp.ndarray, int]]:
    """Yields (start, chunk [chunk_size, ...], number of real rows); the last chunk is zero-padded."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
    for start in range(0, array.shape[0], chunk_size):
        chunk = jnp.asarray(array[start : start + chunk_size])
        valid = chunk.shape[0]
        if valid < chunk_size:
            padding = jnp.zeros((chunk_size - valid, *chunk.shape[1:]), chunk.dtype)
            chunk = jnp.concatenate([chunk, padding])
        yield start, chunk, valid
