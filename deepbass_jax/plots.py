"""Figures of a run: learning curves over the labels bought and, for 2-D data, the decision boundary in the style of
Figs. 1-2, in the labeling page's class colours."""

from __future__ import annotations

import io
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: runs write files, they never open windows

import jax  # noqa: E402
import matplotlib.colors  # noqa: E402
import matplotlib.figure  # noqa: E402
import matplotlib.lines  # noqa: E402
import matplotlib.patches  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from deepbass_jax.oracle.rounds import class_colors  # noqa: E402 (the labeling page's colours)
from deepbass_jax.workdir import checkpoint  # noqa: E402


def _save(figure, path) -> None:
    """Writes `figure` as PNG atomically (a kill leaves the old image or the new one) and closes it."""
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=120)
    plt.close(figure)
    checkpoint.atomic_write_bytes(path, image.getvalue())


# ------------------------------------------------------------------------------------------------ learning curves
# Every quantity's colour, the same in every run whatever else the run measured (a missing series never shifts the
# others' colours).
COLOURS = {
    "test_accuracy": "tab:blue",
    "val_accuracy": "tab:cyan",
    "ground_truth_accuracy": "tab:orange",
    "pseudo_label_accuracy": "tab:green",
    "pseudo_labeled": "tab:olive",
    "pseudo_label_coverage": "tab:brown",
    "theta": "tab:red",
    "mean_pool_entropy": "tab:purple",
}
# One panel per kind of quantity, each with its own linear y axis: (y label, values shown in %, lowest y shown
# (None: automatic), series as (metrics key, legend)). The ground-truth label count is the x axis.
_PANELS = (
    ("accuracy (%)", True, None, (
        ("test_accuracy", "test"),
        ("val_accuracy", "validation"),
        ("ground_truth_accuracy", "ground-truth labels (fit)"),
        ("pseudo_label_accuracy", "pseudo-labels vs hidden labels"))),
    ("pseudo-labeled samples", False, 0, (
        ("pseudo_labeled", "pseudo-labeled samples"),)),
    ("pseudo-label coverage\n(% of unlabeled pool)", True, 0, (
        ("pseudo_label_coverage", "pseudo-labeled share of the unlabeled pool"),)),
    ("normalized entropy (0-1)", False, 0, (
        ("theta", "theta (pseudo-label threshold)"),
        ("mean_pool_entropy", "mean pool entropy"))),
)
_PSEUDO_KEYS = ("pseudo_labeled", "pseudo_label_coverage", "pseudo_label_accuracy")
_FEW_POINTS = 30  # series with at most this many drawn points get a marker at every point


def _values(metrics: list[dict], key: str, percent: bool = False) -> np.ndarray:
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


def _x_axis(metrics: list[dict]) -> tuple[np.ndarray, str, list[str]]:
    """The x values [lines], the x label and notes: the ground-truth labels bought so far (the lines' "labels"),
    or the iteration where the label count never changes (no label was bought after the initial ones) or is
    missing."""
    iterations = np.asarray([m.get("iteration", i) for i, m in enumerate(metrics)], dtype=float)
    labels = _values(metrics, "labels")
    span = f"iterations {int(iterations.min())}-{int(iterations.max())}" if len(metrics) > 1 else "iteration 0"
    if np.isfinite(labels).all() and (len(np.unique(labels)) > 1 or len(metrics) == 1):
        label = f"ground-truth labels bought (the initial ones included; {span})"
        if len(np.unique(labels)) < len(labels):
            label += "\nbetween two purchases, several iterations share one label count"
        return labels, label, []
    notes = [f"{int(labels[0])} ground-truth labels throughout (none bought after the initial ones): "
             "x is the iteration"] if np.isfinite(labels).all() else []
    return iterations, "iteration of Algorithm 3.1 (0: initial fit on the ground-truth labels)", notes


def _pseudo_label_notes(metrics: list[dict], series: dict) -> list[str]:
    """Drops from `series` ({metrics key: values}) the pseudo-label series that say nothing, and says why: none
    when no sample was ever pseudo-labeled, the coverage when it is 100 % throughout (all-data mode)."""
    counts, coverage = series.get("pseudo_labeled"), series.get("pseudo_label_coverage")
    made = [np.nan_to_num(v[np.isfinite(v)]).any() for v in (counts, coverage) if v is not None]
    if made and not any(made) and not np.isfinite(series.get("pseudo_label_accuracy", [np.nan])).any():
        for key in _PSEUDO_KEYS:
            series.pop(key, None)
        return ["no sample was pseudo-labeled in this run"]
    shown = coverage[np.isfinite(coverage)] if coverage is not None else np.array([])
    if len(shown) and np.allclose(shown, 100.0):
        del series["pseudo_label_coverage"]
        return ["every unlabeled pool sample was pseudo-labeled in every iteration (coverage 100 %)"]
    return []


def curves_figure(metrics: list[dict], title: str = "") -> matplotlib.figure.Figure:
    """The learning-curves figure of one run, not attached to pyplot: over the ground-truth labels bought (the
    iteration when none was bought after the initial fit), a panel per kind of quantity with its own linear y axis
    (accuracies in %; pseudo-labeled samples; pseudo-label coverage in %; theta and mean pool entropy, normalized
    to [0, 1]), each quantity in its colour `COLOURS[key]`. Panels with no data, or saying nothing (no pseudo-label
    at all, coverage 100 % throughout), are left out with a note; `title`, when given, is the figure title."""
    x, x_label, notes = _x_axis(metrics) if metrics else (np.zeros(0), "", [])
    series = {key: _values(metrics, key, percent) for _, percent, _, keys in _PANELS for key, _ in keys}
    series = {key: values for key, values in series.items() if np.isfinite(values).any()}
    notes += _pseudo_label_notes(metrics, series)
    panels = []
    for label, percent, bottom, keys in _PANELS:
        shown = [(key, name, series[key]) for key, name in keys if key in series]
        if shown:
            panels.append((label, percent, bottom, shown))

    figure = matplotlib.figure.Figure(figsize=(8, 1.2 + 2.5 * max(len(panels), 1)), layout="constrained")
    if title:
        figure.suptitle(title)
    if not panels:
        figure.text(0.5, 0.5, "no metrics to plot", ha="center", va="center")
        return figure
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for axis, (label, percent, bottom, shown) in zip(axes, panels):
        for key, name, values in shown:
            axis.plot(x, values, label=name, color=COLOURS[key], **_marker_style(values))
        axis.set_ylabel(label)
        low, high = axis.get_ylim()
        if percent:  # at least 5 percentage points, so that a few close points do not look far apart
            middle, half = (low + high) / 2, max((high - low) / 2, 2.5)
            low, high = max(middle - half, -2.0), min(middle + half, 102.0)
        if bottom is not None:  # from `bottom`, with headroom: the highest point is not cut by the frame
            top = max(np.nanmax(values) for _, _, values in shown)
            low, high = bottom, max(high, min(top + 0.08 * (top - bottom), 102.0 if percent else np.inf), bottom + 1e-3)
        axis.set_ylim(low, high)
        axis.legend(loc="best", fontsize="small")
        axis.grid(alpha=0.3)
    last = axes[-1]
    pad = max(0.5, 0.02 * (np.nanmax(x) - np.nanmin(x)))
    last.set_xlim(np.nanmin(x) - pad, np.nanmax(x) + pad)
    last.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))
    last.set_xlabel(x_label)
    if max(m.get("iteration", i) for i, m in enumerate(metrics)) <= 0:
        notes.insert(0, "initial fit only (no iterations)")
    if notes:
        axes[0].set_title("\n".join(notes), loc="left", fontsize="small", color="0.25")
    return figure


def curves(metrics: list[dict], path, title: str = "") -> None:
    """Writes `curves_figure(metrics, title)` (accuracy, pseudo-labels and uncertainty over the labels bought in
    one run) as a PNG at `path`, atomically."""
    _save(curves_figure(metrics, title), path)


# ------------------------------------------------------------------------------------------------ decision boundary
_GRID = 200  # grid points per side of the background
_BOUNDARY = "0.1"  # the decision boundary's colour: dark on the pale background


def _tint(colours: np.ndarray, sure: np.ndarray) -> np.ndarray:
    """RGB [..., 3]: white blended toward `colours` [..., 3], the more the surer the prediction (`sure` [...] in
    [0, 1]: 0 a tie between the classes, 1 certain), so that the class points on top stay visible."""
    strength = 0.08 + 0.32 * np.clip(sure, 0.0, 1.0)
    return 1.0 - strength[..., None] * (1.0 - colours)


def _class_name(c: int, class_names: Optional[Sequence[str]]) -> str:
    return f"class {c}: {class_names[c]}" if class_names is not None and str(class_names[c]) != str(c) else f"class {c}"


def draw_decision_boundary(axis, apply_fn, params, points, labeled, labels, title: str = "", *,
                           class_names: Optional[Sequence[str]] = None, legend: bool = True):
    """Figs. 1-2 on `axis`: the background is the network's predicted class in that class's colour (paler where it
    is less sure) with the decision boundary as a dark line; pool points coloured by their class (grey if unknown),
    labeled points crossed out. Class c has the labeling page's colour `rounds.class_colors(C)[c]`; the axes are
    the data's coordinates x0 and x1, as on the page. points [N, 2], labeled [N] bool, labels [N] or None,
    class_names [C] or None. With `legend`, a legend on the axis. Returns (the background image when there are two
    classes, for a colour bar of the probability of class 1, else None; the legend's handles)."""
    points, labeled = np.asarray(points, np.float64), np.asarray(labeled, bool)
    low, high = points.min(axis=0) - 0.3, points.max(axis=0) + 0.3
    xs, ys = np.meshgrid(np.linspace(low[0], high[0], _GRID), np.linspace(low[1], high[1], _GRID))
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    probs = np.asarray(jax.nn.softmax(apply_fn(params, grid), axis=-1), np.float64)  # [G, C]
    num_classes = probs.shape[-1]
    colours = np.asarray([matplotlib.colors.to_rgb(c) for c in class_colors(num_classes)])
    extent = (low[0], high[0], low[1], high[1])
    if num_classes == 2:  # the probability of class 1, on a scale from class 0's colour to class 1's
        p1 = np.linspace(0.0, 1.0, 256)
        scale = matplotlib.colors.ListedColormap(_tint(colours[(p1 >= 0.5).astype(int)], np.abs(2 * p1 - 1)))
        background = axis.imshow(probs[:, 1].reshape(xs.shape), origin="lower", extent=extent, cmap=scale,
                                 vmin=0.0, vmax=1.0, interpolation="bilinear")
        axis.contour(xs, ys, probs[:, 1].reshape(xs.shape), levels=[0.5], colors=_BOUNDARY, linewidths=1.5)
        shading, boundary = [], "decision boundary (P(class 1) = 0.5)"
    else:
        predicted = probs.argmax(axis=-1)
        sure = (probs.max(axis=-1) - 1 / num_classes) / (1 - 1 / num_classes)
        axis.imshow(_tint(colours[predicted], sure).reshape(*xs.shape, 3), origin="lower", extent=extent,
                    interpolation="nearest")
        axis.contour(xs, ys, predicted.reshape(xs.shape), levels=np.arange(num_classes - 1) + 0.5,
                     colors=_BOUNDARY, linewidths=1.0)
        background, boundary = None, "decision boundaries"
        shading = [matplotlib.patches.Patch(facecolor=_tint(colours[0], np.array(1.0)), edgecolor="0.5",
                                            label="background: predicted class (paler: less sure)")]
    handles = []
    if labels is None:
        handles.append(axis.scatter(points[:, 0], points[:, 1], color="0.5", s=12, edgecolors="0.2",
                                    linewidths=0.3, label="pool point (label unknown)"))
    else:
        labels = np.asarray(labels)
        for c in range(num_classes):
            chosen = labels == c
            handles.append(axis.scatter(points[chosen, 0], points[chosen, 1], color=colours[c], s=12,
                                        edgecolors="0.2", linewidths=0.3, label=_class_name(c, class_names)))
    handles.append(axis.scatter(points[labeled, 0], points[labeled, 1], marker="x", c="black", s=40,
                                linewidths=1.5, label="labeled (initial or queried)"))
    handles += [matplotlib.lines.Line2D([], [], color=_BOUNDARY, linewidth=1.5, label=boundary)] + shading
    axis.set_xlim(low[0], high[0])
    axis.set_ylim(low[1], high[1])
    axis.set_xlabel("x0")
    axis.set_ylabel("x1")
    axis.set_title(title or f"prediction after {int(labeled.sum())} labels")
    axis.set_aspect("equal")
    if legend:
        axis.legend(handles=handles, loc="best", fontsize="x-small", framealpha=0.9)
    return background, handles


def decision_boundary(apply_fn, params, points, labeled, labels, path, title: str = "", *,
                      class_names: Optional[Sequence[str]] = None) -> None:
    """One decision-boundary panel (see `draw_decision_boundary`) with its legend and, for two classes, a colour
    bar of the probability of class 1, saved to `path`."""
    figure = matplotlib.figure.Figure(figsize=(7.5, 6.2), layout="constrained")
    axis = figure.subplots()
    background, handles = draw_decision_boundary(axis, apply_fn, params, points, labeled, labels, title,
                                                 class_names=class_names, legend=False)
    if background is not None:
        figure.colorbar(background, ax=axis, shrink=0.8, label="network's probability of class 1")
    figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small")
    _save(figure, path)
