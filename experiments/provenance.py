"""Where a result came from (commit, device) and headless figures, for every experiment and study script."""

from __future__ import annotations

import os
import pathlib
import platform
import subprocess

import jax

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
COMMIT_VARIABLE = "DEEPBASS_COMMIT"  # set where the checkout has no .git (e.g. a copied working tree)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPOSITORY).stdout.strip()


def commit() -> str:
    """The short commit the code came from, marked when deepbass_jax/, experiments/ or studies/ have uncommitted
    changes; $DEEPBASS_COMMIT if set; "unknown" without git or outside a repository."""
    if os.environ.get(COMMIT_VARIABLE):
        return os.environ[COMMIT_VARIABLE]
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "deepbass_jax", "experiments", "studies")
    except OSError:
        return "unknown"
    if not head:
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def device() -> str:
    """One line: platform, device kind, host cores, machine and JAX version."""
    first = jax.devices()[0]
    return (f"{first.platform.upper()} ({first.device_kind}), {os.cpu_count()} host cores, {platform.machine()}, "
            f"JAX {jax.__version__}")


def pyplot():
    """matplotlib.pyplot on the Agg backend, so figures are written without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
