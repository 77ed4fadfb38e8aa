"""plots.curves / curves_figure: the learning-curves figure of a run, inspected as a matplotlib Figure, and the PNG."""

import numpy as np
import pytest
from PIL import Image

from deepbass_jax import plots

TITLE = "all_data_max_entropy, seed 3 (/tmp/run)"


def initial_line(test_accuracy=0.81, val_accuracy=0.8):
    """The iteration-0 line, as active.py writes it: labels, bought and held-out accuracy only."""
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
    return [text.get_text() for axis in figure.axes for text in axis.texts] + [t.get_text() for t in figure.texts]


def test_initial_fit_only_draws_visible_points_and_a_note():
    figure = plots.curves_figure([initial_line()], TITLE)
    assert figure.get_suptitle() == TITLE
    assert_no_empty_axes(figure)
    drawn = axes_of(figure)
    assert {"test", "validation", "ground-truth labels"} <= set(drawn)
    assert not any("theta" in label or "entropy" in label for label in drawn), "no uncertainty panel without data"
    for axis in figure.axes:
        for line in axis.get_lines():
            assert has_visible_marker(line), line.get_label()
    assert any("initial fit only" in text for text in texts(figure))
    # The single point lies inside the x range (not on the frame).
    low, high = figure.axes[-1].get_xlim()
    assert low < 0 < high


def test_few_iterations_put_accuracy_counts_and_entropy_on_separate_axes():
    figure = plots.curves_figure(few_iterations(), TITLE)
    assert figure.get_suptitle() == TITLE
    assert_no_empty_axes(figure)
    drawn = axes_of(figure)
    theta = next(axis for label, axis in drawn.items() if label.startswith("theta"))
    assert drawn["test"] is not theta
    assert drawn["test"] is not drawn["ground-truth labels"]
    assert drawn["ground-truth labels"] is not theta
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
