"""Learning curves of active-learning runs, read from their records (experiments/mnist_table.py's): labels against
test accuracy, the labels needed to reach an accuracy, and the words a report gives their setting. Shared by the
studies that set our curves beside published ones (studies/batchbald_mnist.py, studies/dbal_mnist.py)."""

from __future__ import annotations

import json
import pathlib
from typing import Optional, Sequence

import numpy as np

from experiments import reporting


def load_records(runs: pathlib.Path, presets: Sequence[str]) -> list[dict]:
    """The records RUNS/PRESET/seed_S.json of `presets`, in their order, then by seed."""
    records = [json.loads(path.read_text()) for preset in presets
               for path in sorted((pathlib.Path(runs) / preset).glob("seed_*.json"))]
    return sorted(records, key=lambda r: (list(presets).index(r["preset"]), r["seed"]))


def policy_of(record: dict) -> str:
    return record["config"]["policy"]


def curve(metrics: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Labels [I] and test accuracy in % [I] of a run's metrics lines (line t: the network trained on its labels)."""
    return (np.array([m["labels"] for m in metrics], int),
            np.array([100 * m["test_accuracy"] for m in metrics], float))


def labels_to_reach(labels, accuracy, threshold: float) -> Optional[int]:
    """The labels of the first network whose test accuracy (%) reaches `threshold`; None if none does."""
    reached = np.flatnonzero(np.asarray(accuracy) >= threshold)
    return int(np.asarray(labels)[reached[0]]) if len(reached) else None


def accuracy_at(labels, accuracy, count: int) -> Optional[float]:
    """Test accuracy (%) of the network trained on `count` labels; None if the run had no such network."""
    where = np.flatnonzero(np.asarray(labels) == count)
    return float(np.asarray(accuracy)[where[0]]) if len(where) else None


def reached_summary(values: list[Optional[int]]) -> dict:
    """Mean and sample std of the runs that reached a threshold, and how many of all did."""
    reached = [v for v in values if v is not None]
    mean, std = reporting.mean_std(reached) if reached else (None, None)
    return {"mean": mean, "std": std, "reached": len(reached), "runs": len(values)}


def reached_cell(summary: dict) -> str:
    if not summary["reached"]:
        return "not reached"
    more = "" if summary["reached"] == summary["runs"] else f", {summary['reached']} of {summary['runs']} reached"
    return reporting.cell(summary["mean"], summary["std"]) + more


def scale_words(records: list[dict]) -> str:
    """"CPU scale (6,000-image pool)" from the records' pools (the whole training set: "paper scale")."""
    pools = sorted({r["config"]["pool_size"] for r in records})
    return f"CPU scale ({' / '.join(f'{p:,}' for p in pools)}-image pool)" if 0 not in pools else "paper scale"


def held_out_words(records: list[dict]) -> str:
    sizes = sorted({r["config"]["test_size"] for r in records})
    return "the 10,000 test images" if sizes == [0] else f"the first {' / '.join(map(str, sizes))} test images"
