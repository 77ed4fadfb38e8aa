"""Figures of a run: learning curves and, for 2-D data, the decision boundary in the style of Figs. 1-2."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # headless: runs write files, they never open windows

import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from deepbass_jax import checkpoint  # noqa: E402


def _save(figure, path) -> None:
    """Writes `figure` as PNG atomically (a kill leaves the old image or the new one) and closes it."""
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=120)
    plt.close(figure)
    checkpoint.atomic_write_bytes(path, image.getvalue())


def curves(metrics: list[dict], path) -> None:
    """Accuracy, labels and pseudo-label quality over the iterations of one run."""
    iterations = [m["iteration"] for m in metrics]

    def series(key):
        return [np.nan if m.get(key) is None else m[key] for m in metrics]

    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(7, 9), sharex=True)
    for key in ("test_accuracy", "val_accuracy", "ground_truth_accuracy"):
        if any(key in m for m in metrics):
            top.plot(iterations, series(key), label=key.replace("_", " "))
    top.set_ylabel("accuracy")
    top.legend(loc="lower right")
    top.grid(alpha=0.3)
    middle.plot(iterations, series("labels"), label="ground-truth labels")
    middle.plot(iterations, series("pseudo_labeled"), label="pseudo-labeled samples")
    middle.set_yscale("symlog")
    middle.set_ylabel("samples")
    middle.legend(loc="upper left")
    middle.grid(alpha=0.3)
    for key in ("pseudo_label_accuracy", "pseudo_label_coverage", "theta", "mean_pool_entropy"):
        bottom.plot(iterations, series(key), label=key.replace("_", " "))
    bottom.set_xlabel("iteration of Algorithm 3.1")
    bottom.legend(loc="center right")
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    _save(figure, path)


def draw_decision_boundary(axis, apply_fn, params, points, labeled, labels, title: str = "") -> None:
    """Background: predicted probability of class 1 (white line: 0.5); points coloured by class (grey if
    unknown), labeled points crossed out, as in Figs. 1-2. points [N, 2], labeled [N] bool, labels [N] or None."""
    low, high = points.min(axis=0) - 0.3, points.max(axis=0) + 0.3
    xs, ys = np.meshgrid(np.linspace(low[0], high[0], 200), np.linspace(low[1], high[1], 200))
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    probability = np.asarray(jax.nn.softmax(apply_fn(params, grid), axis=-1))[:, 1].reshape(xs.shape)
    axis.contourf(xs, ys, probability, levels=np.linspace(0, 1, 21), cmap="coolwarm_r", alpha=0.8)
    axis.contour(xs, ys, probability, levels=[0.5], colors="white", linewidths=1.5)
    colours = np.where(labels == 1, "tab:blue", "tab:red") if labels is not None else "grey"
    axis.scatter(points[:, 0], points[:, 1], c=colours, s=6, linewidths=0)
    axis.scatter(points[labeled, 0], points[labeled, 1], marker="x", c="black", s=40, linewidths=1.5)
    axis.set_title(title or f"{int(np.sum(labeled))} labels")
    axis.set_aspect("equal")


def decision_boundary(apply_fn, params, points, labeled, labels, path, title: str = "") -> None:
    """One decision-boundary panel (see `draw_decision_boundary`) saved to `path`."""
    figure, axis = plt.subplots(figsize=(5, 5))
    draw_decision_boundary(axis, apply_fn, params, points, labeled, labels, title)
    figure.tight_layout()
    _save(figure, path)
