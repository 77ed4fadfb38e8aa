"""The oracle of experiments on labeled data: it reveals the labels held back from the driver."""

from __future__ import annotations

from typing import Optional

import numpy as np

from deepbass_jax.oracle import OracleError


class SimulatedOracle:
    """Reveals held-back labels and counts queries; asking for a sample twice is an error."""

    def __init__(self, hidden_labels: np.ndarray):
        self._hidden_labels = np.asarray(hidden_labels)
        self._asked = np.zeros(self._hidden_labels.shape[0], bool)

    @property
    def num_queries(self) -> int:
        return int(self._asked.sum())

    def label(self, indices: np.ndarray, images: Optional[np.ndarray] = None, ids: Optional[np.ndarray] = None,
              context: Optional[dict] = None) -> np.ndarray:
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
