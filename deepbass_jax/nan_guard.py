"""NaN / Inf guard of a run: the error that stops it names the iteration and what is kept (nanodo's loud stop)."""

from __future__ import annotations

import contextlib
import pathlib

import jax
import numpy as np


def nan_error(iteration: int, problem: str, checkpoint: pathlib.Path, metrics_name: str) -> FloatingPointError:
    """The error that stops a run in `iteration` (0: the initial fit); nothing of that iteration is saved (the run
    writes its checkpoint and metrics lines only after an iteration returns)."""
    if iteration == 0:
        where = "the initial fit"
        kept = "no checkpoint was written yet (the first one follows the initial fit)"
    else:
        where = f"iteration {iteration}"
        kept = (f"the last good checkpoint {checkpoint} (after iteration {iteration - 1}) is intact and "
                f"{metrics_name} has no line for iteration {iteration}")
    return FloatingPointError(
        f"{where}: {problem}. The run stopped; {kept}. Running the same command again would meet the same "
        "numbers: look for extreme input values, or lower config.train.learning_rate in a new --workdir."
    )


@contextlib.contextmanager
def stop_on_nan(iteration: int, checkpoint: pathlib.Path, metrics_name: str):
    """Turns a FloatingPointError inside into `nan_error` naming `iteration`."""
    try:
        yield
    except FloatingPointError as error:
        raise nan_error(iteration, str(error).rstrip("."), checkpoint, metrics_name) from error


def require_finite(iteration: int, what: str, values, checkpoint: pathlib.Path, metrics_name: str) -> None:
    """Stops the run when `values` (an array, a scalar or a pytree of arrays, over all seeds) hold NaN or Inf."""
    if not all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree_util.tree_leaves(values)):
        raise nan_error(iteration, f"NaN or Inf in {what}", checkpoint, metrics_name)
