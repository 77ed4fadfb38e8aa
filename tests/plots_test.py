"""plots: the learning-curves figure of a run and the decision boundary of 2-D data, inspected as matplotlib Figures,
the PNGs, and the title a finished run gives them."""

import jax.numpy as jnp
import matplotlib.colors
import matplotlib.figure
import numpy as np
import pytest
from PIL import Image

from deepbass_jax import driver as driver_lib, plots
from deepbass_jax.oracle import rounds
from tests.helpers import toy_config

TITLE = "all_data_max_entropy, seed 3 (/tmp/run)"


def initial_line(test_accuracy=0.81, val_accuracy=0.8):
    """The iteration-0 line, as driver.py writes it: labels, bought and held-out accuracy only."""
    return {"iteration": 0, "labels": 100, "bought": 100, "test_accuracy": test_accuracy,
            "val_accuracy": val_accuracy}


def iteration_line(t: int, **overrides) -> dict:
    """A line of iteration t >= 1 with every key `metrics.metrics_line` writes (plus held-out accuracy)."""
    line = {"iteration": t, "labels": 100 + 10 * t, "bought": 10, "pseudo_labeled": 300 * t, "d_size": 0,
            "theta": 0.05 + 0.001 * t, "mean_pool_entropy": 0.3 - 0.01 * t, "train_loss": 0.1,
            "ground_truth_accuracy": 0.99, "pseudo_label_coverage": 0.01 * t, "pseudo_label_accuracy": 0.95,
            "seconds": 1.0, "test_accuracy": 0.81 + 0.01 * t, "val_accuracy": 0.8 + 0.01 * t}
    line.update(overrides)
    return line


def few_iterations() -> list[dict]:
    return [initial_line(), iteration_line(1, pseudo_label_accuracy=None),
            iteration_line(2, theta=None), iteration_line(3)]


def axes_of(figure) -> dict:
    """{legend label of each drawn line: the Axes it is on}."""
    return {line.get_label(): axis for axis in figure.axes for line in axis.get_lines()}


def has_visible_marker(line) -> bool:
    return line.get_marker() not in (None, "", " ", "None", "none") and line.get_markersize() > 0


def assert_no_empty_axes(figure):
    assert figure.axes
    for axis in figure.axes:
        lines = axis.get_lines()
        assert lines, f"axes {axis.get_ylabel()!r} draws nothing"
        assert any(np.isfinite(np.asarray(line.get_ydata(), float)).any() for line in lines), axis.get_ylabel()
        assert axis.get_ylabel(), "every panel names its quantity (and units)"


def texts(figure) -> list[str]:
    """Every text drawn on the figure: texts and titles of the axes, and the figure's own texts."""
    return ([text.get_text() for axis in figure.axes for text in axis.texts]
            + [axis.get_title(loc) for axis in figure.axes for loc in ("left", "center", "right")]
            + [t.get_text() for t in figure.texts])


def labels_of(metrics) -> list[float]:
    return [float(m["labels"]) for m in metrics]


def test_initial_fit_only_draws_visible_points_and_a_note():
    figure = plots.curves_figure([initial_line()], TITLE)
    assert figure.get_suptitle() == TITLE
    assert_no_empty_axes(figure)
    drawn = axes_of(figure)
    assert {"test", "validation"} <= set(drawn)
    assert not any("theta" in label or "entropy" in label for label in drawn), "no uncertainty panel without data"
    for axis in figure.axes:
        for line in axis.get_lines():
            assert has_visible_marker(line), line.get_label()
            np.testing.assert_array_equal(line.get_xdata(), [100])  # x: the 100 labels of the initial fit
    assert any("initial fit only" in text for text in texts(figure))
    # The single point lies inside the x range (not on the frame).
    low, high = figure.axes[-1].get_xlim()
    assert low < 100 < high


def test_few_iterations_put_accuracy_counts_and_entropy_on_separate_axes():
    figure = plots.curves_figure(few_iterations(), TITLE)
    assert figure.get_suptitle() == TITLE
    assert_no_empty_axes(figure)
    drawn = axes_of(figure)
    theta = next(axis for label, axis in drawn.items() if label.startswith("theta"))
    assert drawn["test"] is not theta
    assert drawn["test"] is not drawn["pseudo-labeled samples"]
    assert drawn["pseudo-labeled samples"] is not theta
    assert drawn["mean pool entropy"] is theta
    assert "%" in drawn["test"].get_ylabel()
    # Accuracies are drawn in %, consistently with the axis label.
    test_line = next(line for line in drawn["test"].get_lines() if line.get_label() == "test")
    np.testing.assert_allclose(test_line.get_ydata(), [81, 82, 83, 84])
    # Few points: every series has markers, so the isolated theta points around the missing one show.
    for axis in figure.axes:
        for line in axis.get_lines():
            assert has_visible_marker(line), line.get_label()
    assert not any("initial fit only" in text for text in texts(figure))


def test_missing_series_and_panels_are_left_out():
    metrics = [initial_line(val_accuracy=None)] + [
        iteration_line(t, val_accuracy=None, pseudo_label_accuracy=None, theta=None, mean_pool_entropy=None)
        for t in (1, 2)]
    figure = plots.curves_figure(metrics)
    assert figure.get_suptitle() == ""
    assert_no_empty_axes(figure)
    drawn = axes_of(figure)
    assert "validation" not in drawn and not any("pseudo-labels vs" in label for label in drawn)
    assert not any("theta" in label or "entropy" in label for label in drawn)


def test_long_runs_mark_only_isolated_points():
    metrics = [initial_line()] + [iteration_line(t, val_accuracy=None,
                                                 pseudo_label_accuracy=None if t in (49, 51) else 0.9)
                                  for t in range(1, 101)]
    figure = plots.curves_figure(metrics, TITLE)
    assert_no_empty_axes(figure)
    lines = {line.get_label(): line for axis in figure.axes for line in axis.get_lines()}
    assert not has_visible_marker(lines["test"]), "101 points: a plain line"
    assert has_visible_marker(lines["validation"]), "a single point still shows"
    isolated = next(line for label, line in lines.items() if label.startswith("pseudo-labels vs"))
    assert has_visible_marker(isolated) and list(isolated.get_markevery()) == [50]


def test_no_metrics_draws_a_note_and_no_axes():
    figure = plots.curves_figure([], TITLE)
    assert not figure.axes
    assert any("no metrics" in text for text in texts(figure))


@pytest.mark.parametrize("metrics", [[initial_line()], few_iterations()], ids=["initial_fit_only", "few_iterations"])
def test_curves_writes_a_valid_png(tmp_path, metrics):
    path = tmp_path / "curves.png"
    plots.curves(metrics, path, TITLE)
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 300 and image.height > 300
        pixels = np.asarray(image.convert("L"))
    assert pixels.min() < 128 < pixels.max(), "the image is not blank"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"], "no temporary file is left behind"


# ------------------------------------------------------------------------------------------------ what a newcomer reads
def colours_of(figure) -> dict:
    """{legend label of each drawn line: its colour as RGBA}."""
    return {line.get_label(): matplotlib.colors.to_rgba(line.get_color()) for axis in figure.axes
            for line in axis.get_lines()}


def active_only() -> list[dict]:
    """Active learning without pseudo-labels, as driver.py writes it: counts and coverage 0, no theta, no
    pseudo-label accuracy."""
    return [initial_line()] + [iteration_line(t, pseudo_labeled=0, pseudo_label_coverage=0.0, theta=None,
                                              pseudo_label_accuracy=None) for t in (1, 2, 3)]


def all_data() -> list[dict]:
    """All-data mode: every unlabeled sample pseudo-labeled in every iteration (coverage 1.0), no theta."""
    return [initial_line()] + [iteration_line(t, pseudo_label_coverage=1.0, theta=None) for t in (1, 2, 3)]


def test_every_quantity_keeps_its_colour_whatever_else_the_run_has():
    full = plots.curves_figure(few_iterations(), TITLE)
    fewer = plots.curves_figure([{k: v for k, v in m.items() if k not in ("val_accuracy", "ground_truth_accuracy")}
                                 for m in few_iterations()], TITLE)
    full_colours, fewer_colours = colours_of(full), colours_of(fewer)
    assert "validation" in full_colours and "validation" not in fewer_colours
    shared = set(full_colours) & set(fewer_colours)
    assert {"test", "pseudo-labels vs hidden labels", "mean pool entropy"} <= shared
    for label in shared:
        assert full_colours[label] == fewer_colours[label], label
    assert full_colours["test"] == matplotlib.colors.to_rgba(plots.COLOURS["test_accuracy"])
    assert len(set(full_colours.values())) == len(full_colours), "no two quantities share a colour"


def test_active_only_run_draws_no_pseudo_label_panel():
    figure = plots.curves_figure(active_only(), TITLE)
    assert_no_empty_axes(figure)
    assert len(figure.axes) == 2, [axis.get_ylabel() for axis in figure.axes]  # accuracy, entropy
    assert not any("pseudo" in axis.get_ylabel() for axis in figure.axes)
    assert not any("pseudo" in label or "theta" in label for label in axes_of(figure))
    assert any("no sample was pseudo-labeled" in text for text in texts(figure))


def test_all_data_run_folds_the_constant_coverage_into_a_note():
    figure = plots.curves_figure(all_data(), TITLE)
    assert_no_empty_axes(figure)
    assert len(figure.axes) == 3, [axis.get_ylabel() for axis in figure.axes]  # accuracy, counts, entropy
    assert not any("coverage" in axis.get_ylabel() for axis in figure.axes)
    assert "pseudo-labeled samples" in axes_of(figure)
    assert any("100 %" in text for text in texts(figure))


@pytest.mark.parametrize("metrics", [few_iterations(), active_only(), all_data()], ids=["step_wise", "active", "all"])
def test_x_axis_is_the_labels_bought_on_linear_axes(metrics):
    figure = plots.curves_figure(metrics, TITLE)
    for axis in figure.axes:
        assert axis.get_yscale() == "linear", axis.get_ylabel()
        for line in axis.get_lines():
            np.testing.assert_array_equal(line.get_xdata(), labels_of(metrics))
    assert "labels" in figure.axes[-1].get_xlabel()
    assert "ground-truth labels" not in axes_of(figure), "the label count is the x axis, not a curve"


def test_no_label_bought_after_the_initial_ones_puts_iterations_on_x_with_a_note():
    metrics = [initial_line()] + [iteration_line(t, labels=100, bought=0) for t in (1, 2, 3)]
    figure = plots.curves_figure(metrics, TITLE)
    for axis in figure.axes:
        for line in axis.get_lines():
            np.testing.assert_array_equal(line.get_xdata(), [0, 1, 2, 3])
    assert "iteration" in figure.axes[-1].get_xlabel()
    assert any("100 ground-truth labels throughout" in text for text in texts(figure))


def two_class_model(params, x):
    """Logits [N, 2]: class 1 above the line x1 = 0."""
    return jnp.stack([-3 * x[:, 1], 3 * x[:, 1]], axis=-1)


def toy_points():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(60, 2)).astype(np.float32)
    labeled = np.zeros(60, bool)
    labeled[:6] = True
    return points, labeled, (points[:, 1] > 0).astype(np.int32)


def test_decision_boundary_has_a_legend_axis_labels_and_the_labeling_pages_colours():
    points, labeled, labels = toy_points()
    figure = matplotlib.figure.Figure()
    axis = figure.subplots()
    plots.draw_decision_boundary(axis, two_class_model, None, points, labeled, labels)
    assert (axis.get_xlabel(), axis.get_ylabel()) == ("x0", "x1"), "the coordinates' names on the labeling page"
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert {"class 0", "class 1", "labeled (initial or queried)"} <= set(legend)
    assert any("decision boundary" in text for text in legend)
    page = rounds.class_colors(2)
    for collection in axis.collections:
        if collection.get_label().startswith("class "):
            c = int(collection.get_label().split()[1].rstrip(":"))
            np.testing.assert_allclose(collection.get_facecolor()[0], matplotlib.colors.to_rgba(page[c]))
    assert sum(c.get_label().startswith("class ") for c in axis.collections) == 2


def test_decision_boundary_png_has_its_legend_outside_and_a_colour_bar(tmp_path, monkeypatch):
    points, labeled, labels = toy_points()
    saved = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: saved.append(figure))
    plots.decision_boundary(two_class_model, None, points, labeled, labels, tmp_path / "decision_boundary.png",
                            class_names=("down", "up"))
    (figure,) = saved
    assert len(figure.legends) == 1
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert {"class 0: down", "class 1: up"} <= set(legend)
    assert any("probability of class 1" in axis.get_ylabel() for axis in figure.axes), "the colour bar says what"


def test_decision_boundary_of_three_classes_and_unknown_labels(tmp_path):
    points, labeled, _ = toy_points()

    def three_classes(params, x):
        return jnp.stack([x[:, 0], x[:, 1], -x[:, 0] - x[:, 1]], axis=-1)

    figure = matplotlib.figure.Figure()
    axis = figure.subplots()
    plots.draw_decision_boundary(axis, three_classes, None, points, labeled, None)
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert "pool point (label unknown)" in legend and any("predicted class" in text for text in legend)
    plots.decision_boundary(three_classes, None, points, labeled, None, tmp_path / "db.png")
    with Image.open(tmp_path / "db.png") as image:
        assert image.format == "PNG"


def test_a_finished_run_titles_its_curves_with_the_data_set_and_seed(tmp_path, monkeypatch):
    """An npz run on 2-D points: the title names the file (not the yin-yang preset's data) and the seed."""
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = (np.stack([np.cos(2 * np.pi * y / 3), np.sin(2 * np.pi * y / 3)], 1) * 3 + rng.normal(0, 0.6, (90, 2)))
    np.savez(tmp_path / "my_blobs.npz", x=x.astype(np.float32), y=y)
    config = toy_config(initial_per_class=2, initial_epochs=20, iterations=2, acquire_every=1, acquire_count=2,
                        budget=10, figures=True, seed=3)
    config.data.name, config.data.path = "npz", str(tmp_path / "my_blobs.npz")
    titles, drawn = [], []
    curves, boundary = plots.curves, plots.decision_boundary
    monkeypatch.setattr(plots, "curves", lambda metrics, path, title="": (titles.append(title),
                                                                           curves(metrics, path, title)))
    monkeypatch.setattr(plots, "decision_boundary", lambda *args, **kwargs: (drawn.append(args[-1]),
                                                                             boundary(*args, **kwargs)))
    driver_lib.run(config, tmp_path / "run")
    (title,) = titles
    assert title.startswith("my_blobs, seed 3"), title
    assert "yinyang" not in title and "active_semi_supervised" in title, "the preset may follow the data set"
    assert [path.name for path in drawn] == ["decision_boundary.png"]
    for name in ("curves.png", "decision_boundary.png"):
        with Image.open(tmp_path / "run" / name) as image:
            assert image.format == "PNG"
