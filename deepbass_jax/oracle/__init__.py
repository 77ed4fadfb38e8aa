"""Oracles answer line 9 of Algorithm 3.1: the ground truth g' of queried pool samples.

`SimulatedOracle` (simulated.py) reveals labels held back from the driver; `FileOracle` (files.py) asks a person
through a round folder written by `rounds.write_round`: a labeling page (the package data in page/) and CSVs. The
driver reaches hidden labels only through an oracle (metrics aside).
"""

from __future__ import annotations

from typing import Optional, Protocol

import numpy as np


class Oracle(Protocol):
    def label(self, indices: np.ndarray, images: np.ndarray, ids: Optional[np.ndarray] = None,
              context: Optional[dict] = None) -> np.ndarray:
        """Ground truth [n] int for pool samples `indices` [n]; `images` [n, ...], their `ids` [n] (rows of the
        user's file, or for a folder of images each file's path: see `ids`) and `context` (vector data: the pool and
        its labeled points) are for display."""

    def replay(self, indices: np.ndarray, labels: np.ndarray) -> None:
        """Takes note of answers it gave before an interruption (read back from the oracle log), so that its
        state is what an uninterrupted run would have; nothing is asked."""

    def state_dict(self) -> dict:
        """What a checkpoint must hold to resume the oracle."""

    def load_state_dict(self, state: dict) -> None:
        ...


class OracleError(ValueError):
    """An oracle was asked something it cannot answer, or answered something invalid."""


class LabelsPending(Exception):
    """A person has not answered a FileOracle query yet; the run stops and resumes when they have."""


# The oracles, after the errors they raise (their modules import them from here).
from deepbass_jax.oracle.files import ANSWERS, FileOracle, parse_label  # noqa: E402
from deepbass_jax.oracle.simulated import SimulatedOracle  # noqa: E402



def _simulated(config, dataset, hidden_labels, folder, value_range) -> Oracle:
    """Reveals the labels held back from the driver (hidden_labels [N])."""
    return SimulatedOracle(hidden_labels)


def _file(config, dataset, hidden_labels, folder, value_range) -> Oracle:
    """A person answers rounds written to folder/oracle; value_range: the pool's (low, high), one contrast. A
    folder of images names its samples by path (`dataset.files`), other data by row."""
    return FileOracle(folder / "oracle", dataset.num_classes, wait_seconds=config.oracle_wait_seconds,
                      class_names=dataset.class_names, value_range=value_range, path_ids=dataset.files is not None)


ORACLES = {"simulated": _simulated, "file": _file}  # config.oracle -> builder


def build(config, dataset, hidden_labels, folder, value_range=None) -> Oracle:
    """The oracle config.oracle names for one seed's pool (its hidden labels [N] or None) in its run folder."""
    return ORACLES[config.oracle](config, dataset, hidden_labels, folder, value_range)


__all__ = ["ANSWERS", "ORACLES", "FileOracle", "LabelsPending", "Oracle", "OracleError", "SimulatedOracle", "build",
           "parse_label"]
