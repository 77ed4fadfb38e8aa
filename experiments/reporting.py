"""The one records module: from per-run records to a results README. Mean, sample std, the "mean (std)" cell, and
writing the report. (Named reporting, not records: `records` names the lists of run records everywhere.)

Every report under results/ is made with these (experiments/mnist_report.py, toy_runs.py, multihost_scale.py,
studies/augmentation_variants.py, studies/toy_factors.py), so a number is computed and printed one way:

    mean([1, 2, 3]) == 2.0; sample_std([1, 2, 3]) == 1.0; sample_std([5]) is None
    cell(97.5234, 0.6871) == "97.52 (0.69)"; cell(97.5) == "97.50"; cell(None) == "-"
    write_report(outdir, lines, table)   # outdir/README.md, and outdir/table.json from `table`
    runnable("python -m experiments.toy_ablation --runs=10")  # a recorded command as it runs now (studies.)

No flags.
"""

from __future__ import annotations

import pathlib
from typing import Any, Iterable, Optional

import numpy as np

from deepbass_jax.workdir import checkpoint
from experiments.provenance import REPOSITORY

README = "README.md"


def mean(values: Iterable[float]) -> float:
    """The mean of `values` (numpy's pairwise sum, as every table.json so far holds it)."""
    return float(np.mean(np.asarray(list(values), float)))


def sample_std(values: Iterable[float]) -> Optional[float]:
    """The sample standard deviation (ddof=1) of `values`; None for fewer than two values."""
    values = np.asarray(list(values), float)
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def mean_std(values: Iterable[float]) -> tuple[float, Optional[float]]:
    """(mean, sample std) of `values`; the std is None for one value."""
    values = list(values)
    return mean(values), sample_std(values)


def cell(mean_value: Optional[float], std: Optional[float] = None) -> str:
    """A table cell: "97.52 (0.69)", "97.52" without a std, "-" without a mean."""
    if mean_value is None:
        return "-"
    return f"{mean_value:.2f}" + (f" ({std:.2f})" if std is not None else "")


def machines(entries: Iterable[dict]) -> str:
    """"Machines: DEVICE, commit C; ...." over the distinct (device, commit) of `entries` (records or invocations)."""
    return "Machines: " + "; ".join(sorted({f"{e['device']}, commit {e['commit']}" for e in entries})) + "."


def shown(outdir: pathlib.Path) -> str:
    """`outdir` as a README's command shows it: relative to the repository when inside it, `results/NAME` when it
    is a data set's folder of another results/ (a job merged elsewhere), else as given."""
    resolved = pathlib.Path(outdir).resolve()
    try:
        return str(resolved.relative_to(REPOSITORY))
    except ValueError:
        return f"results/{resolved.name}" if resolved.parent.name == "results" else str(outdir)


# Scripts that moved, with their flags unchanged: a record keeps the command as it ran, a README shows the one to
# run now.
MOVED = {"python -m experiments.augmentation_study ": "python -m studies.augmentation_study ",
         "python -m experiments.toy_ablation ": "python -m studies.toy_ablation "}


def runnable(command: str) -> str:
    """A recorded `command` as it runs now (a script that moved since: its new module, the same flags)."""
    for old, new in MOVED.items():
        if command.startswith(old):
            return new + command[len(old):]
    return command


def write_report(outdir: pathlib.Path, lines: list[str], table: Any = None, table_name: str = "table.json") -> str:
    """Writes `outdir`/README.md, the `lines` with a newline after each, and, if given, `table` as
    `outdir`/`table_name` (sorted keys, 2-space indent); each file atomically. Returns the README's text."""
    outdir = pathlib.Path(outdir)
    if table is not None:
        checkpoint.write_json(outdir / table_name, table)
    text = "\n".join(lines) + "\n"
    checkpoint.atomic_write_bytes(outdir / README, text.encode())
    return text


BEFORE_RESTART = "_before_restart"  # row suffix of a restarted run's iterations' network (config.restart_epochs)


def with_restart(record: dict, restart: Optional[dict]) -> list[dict]:
    """A run's record, or for a run with a clean restart (`restart`: its summary's "restart", test accuracy in
    [0, 1]) two: the restart's network under the record's row, the iterations' network under row + BEFORE_RESTART."""
    if restart is None:
        return [record]
    return [{**record, "test_accuracy": 100 * restart["test_accuracy"], "network": "restart"},
            {**record, "row": record["row"] + BEFORE_RESTART, "network": "iterations"}]


def record_path(outdir: pathlib.Path, preset: str, record: dict) -> pathlib.Path:
    """OUTDIR/runs/PRESET/seed_S.json, or seed_S_before_restart.json for the iterations' network of a restart."""
    suffix = BEFORE_RESTART if record.get("network") == "iterations" else ""
    return pathlib.Path(outdir) / "runs" / preset / f"seed_{record['seed']}{suffix}.json"
