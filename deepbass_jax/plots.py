"""Figures of a run: learning curves and, for 2-D data, the decision boundary in the style of Figs. 1-2."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # headless: runs write files, they never open windows

import jax  # noqa: E402
import matplotlib.figure  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from deepbass_jax import checkpoint  # noqa: E402


def _save(figure, path) -> None:
    """Writes `figure` as PNG atomically (a kill leaves the old image or the new one) and closes it."""
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=120)
    plt.close(figure)
    checkpoint.atomic_write_bytes(path, image.getvalue())


# One panel per kind of quantity, each with its own y axis: (y label, scale, values shown in %, lowest y shown
# (None: automatic), series as (metrics key, legend)).
_PANELS = (
    ("accuracy (%)", "linear", True, None, (
        ("test_accuracy", "test"),
        ("val_accuracy", "validation"),
        ("ground_truth_accuracy", "ground-truth labels (fit)"),
        ("pseudo_label_accuracy", "pseudo-labels vs hidden labels"))),
    ("samples (symlog scale)", "symlog", False, 0, (
        ("labels", "ground-truth labels"),
        ("pseudo_labeled", "pseudo-labeled samples"))),
    ("pseudo-label coverage\n(% of unlabeled pool)", "linear", True, 0, (
        ("pseudo_label_coverage", "pseudo-labeled share of the unlabeled pool"),)),
    ("normalized entropy (0-1)", "linear", False, 0, (
        ("theta", "theta (pseudo-label threshold)"),
        ("mean_pool_entropy", "mean pool entropy"))),
)
_FEW_POINTS = 30  # series with at most this many drawn points get a marker at every point


def _values(metrics: list[dict], key: str, percent: bool) -> np.ndarray:
    """The values of `key` over the lines as floats; NaN where missing, None or not a finite number."""
    values = []
    for m in metrics:
        value = m.get(key)
        try:
            value = float(value) if value is not None else np.nan
        except (TypeError, ValueError):
            value = np.nan
        values.append(value * 100 if percent else value)
    values = np.asarray(values, dtype=float)
    return np.where(np.isfinite(values), values, np.nan)


def _marker_style(values: np.ndarray) -> dict:
    """Markers at every point of a short series; in a long one, at the points no line segment reaches (their
    neighbours are missing), which a line alone would leave invisible."""
    present = np.isfinite(values)
    if present.sum() <= _FEW_POINTS:
        return {"marker": "o", "markersize": 4}
    padded = np.concatenate([[False], present, [False]])
    isolated = np.flatnonzero(present & ~padded[:-2] & ~padded[2:])
    return {"marker": "o", "markersize": 3, "markevery": isolated.tolist()} if len(isolated) else {}


def curves_figure(metrics: list[dict], title: str = "") -> matplotlib.figure.Figure:
    """The learning-curves figure of one run, not attached to pyplot: over the iterations (0: the initial fit),
    a panel per kind of quantity with its own y axis (accuracies in %; ground-truth and pseudo-labeled sample
    counts; pseudo-label coverage in %; theta and mean pool entropy, normalized to [0, 1]). Panels with no data
    are left out; `title`, when given, is the figure title."""
    iterations = np.asarray([m.get("iteration", i) for i, m in enumerate(metrics)], dtype=float)
    panels = []
    for label, scale, percent, bottom, keys in _PANELS:
        series = [(name, _values(metrics, key, percent)) for key, name in keys]
        series = [(name, values) for name, values in series if np.isfinite(values).any()]
        if series:
            panels.append((label, scale, percent, bottom, series))

    figure = matplotlib.figure.Figure(figsize=(8, 1.0 + 2.5 * max(len(panels), 1)), layout="constrained")
    if title:
        figure.suptitle(title)
    if not panels:
        figure.text(0.5, 0.5, "no metrics to plot", ha="center", va="center")
        return figure
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for axis, (label, scale, percent, bottom, series) in zip(axes, panels):
        for name, values in series:
            axis.plot(iterations, values, label=name, **_marker_style(values))
        axis.set_ylabel(label)
        if scale == "symlog":
            axis.set_yscale("symlog", linthresh=1)
            top = max(np.nanmax(values) for _, values in series)
            axis.set_ylim(bottom, max(2.0, 2 * top))  # headroom: the highest point is not cut by the frame
        else:
            low, high = axis.get_ylim()
            if percent:  # at least 5 percentage points, so that a few close points do not look far apart
                middle, half = (low + high) / 2, max((high - low) / 2, 2.5)
                low, high = max(middle - half, -2.0), min(middle + half, 102.0)
            axis.set_ylim(low if bottom is None else bottom, high)
        axis.legend(loc="best", fontsize="small")
        axis.grid(alpha=0.3)
    last = axes[-1]
    pad = max(0.5, 0.02 * (np.nanmax(iterations) - np.nanmin(iterations)))
    last.set_xlim(np.nanmin(iterations) - pad, np.nanmax(iterations) + pad)
    last.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))
    last.set_xlabel("iteration of Algorithm 3.1 (0: initial fit on the ground-truth labels)")
    if np.nanmax(iterations) <= 0:
        axes[0].text(0.02, 0.95, "initial fit only (no iterations)", transform=axes[0].transAxes, va="top",
                     ha="left", bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
    return figure


def curves(metrics: list[dict], path, title: str = "") -> None:
    """Writes `curves_figure(metrics, title)` (accuracy, labels, pseudo-label coverage and uncertainty over the
    iterations of one run) as a PNG at `path`, atomically."""
    _save(curves_figure(metrics, title), path)


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
