"""NaN / Inf guard of a run: the error that stops it names the iteration and what is kept (nanodo's loud stop)."""

from __future__ import annotations

import contextlib
import pathlib

import jax
import numpy as np


class NanGuard:
    """Stops a run whose numbers went NaN or Inf; `checkpoint` is the run's checkpoint file and `metrics_name` the
    name of its metrics file, which the message says are intact."""

    def __init__(self, checkpoint: pathlib.Path, metrics_name: str):
        self.checkpoint, self.metrics_name = checkpoint, metrics_name

    def error(self, iteration: int, problem: str) -> FloatingPointError:
        """The error that stops a run in `iteration` (0: the initial fit); nothing of that iteration is saved (the
        run writes its checkpoint and metrics lines only after an iteration returns)."""
        if iteration == 0:
            where = "the initial fit"
            kept = "no checkpoint was written yet (the first one follows the initial fit)"
        else:
            where = f"iteration {iteration}"
            kept = (f"the last good checkpoint {self.checkpoint} (after iteration {iteration - 1}) is intact and "
                    f"{self.metrics_name} has no line for iteration {iteration}")
        return FloatingPointError(
            f"{where}: {problem}. The run stopped; {kept}. Running the same command again would meet the same "
            "numbers: look for extreme input values, or lower config.train.learning_rate in a new --workdir."
        )

    @contextlib.contextmanager
    def stop_on_nan(self, iteration: int):
        """Turns a FloatingPointError inside into `error` naming `iteration`."""
        try:
            yield
        except FloatingPointError as error:
            raise self.error(iteration, str(error).rstrip(".")) from error

    def require_finite(self, iteration: int, what: str, values) -> None:
        """Stops the run when `values` (an array, a scalar or a pytree of arrays, over all seeds) hold NaN or Inf."""
        if not all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree_util.tree_leaves(values)):
            raise self.error(iteration, f"NaN or Inf in {what}")
