"""experiments/reporting.py, the one records module: mean, sample std, table cells and the report files."""

import json

import numpy as np
import pytest

from experiments import reporting


def test_mean_and_sample_std_on_known_numbers():
    assert reporting.mean([1, 2, 3]) == 2.0
    assert reporting.sample_std([1, 2, 3]) == 1.0  # sqrt(((1-2)^2 + 0 + (3-2)^2) / (3 - 1))
    assert reporting.sample_std([2.0, 4.0]) == pytest.approx(np.sqrt(2.0))
    assert reporting.sample_std([5.0]) is None  # one run has no spread
    assert reporting.mean_std(x for x in (80.0, 82.0, 84.0)) == (82.0, 2.0)  # any iterable, read once
    assert reporting.mean_std([97.5]) == (97.5, None)


def test_the_mean_is_numpys_so_recorded_tables_keep_their_last_bits():
    values = [0.1 * k + 1e-9 * k * k for k in range(1, 12)]
    assert reporting.mean(values) == float(np.mean(values))
    assert reporting.sample_std(values) == float(np.std(values, ddof=1))


def test_cells():
    assert reporting.cell(97.5234, 0.6871) == "97.52 (0.69)"
    assert reporting.cell(97.5) == "97.50"  # without a std (one run)
    assert reporting.cell(None, 0.3) == "-"  # no number (e.g. the paper has none for this row)
    assert reporting.cell(*reporting.mean_std([1, 2, 3])) == "2.00 (1.00)"


def test_machines_and_shown(tmp_path):
    entries = [{"device": "CPU", "commit": "b"}, {"device": "CPU", "commit": "a"}, {"device": "CPU", "commit": "b"}]
    assert reporting.machines(entries) == "Machines: CPU, commit a; CPU, commit b."
    assert reporting.shown(reporting.REPOSITORY / "results" / "toy" / "ablation") == "results/toy/ablation"
    assert reporting.shown(tmp_path / "results" / "mnist") == "results/mnist"  # a results/ merged elsewhere
    assert reporting.shown(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")


def test_write_report_writes_the_readme_and_the_table(tmp_path):
    text = reporting.write_report(tmp_path, ["# Title", "", "| a |"], {"b": 1, "a": 2.5}, "summary.json")
    assert text == "# Title\n\n| a |\n" == (tmp_path / "README.md").read_text()
    assert (tmp_path / "summary.json").read_text() == '{\n  "a": 2.5,\n  "b": 1\n}\n'
    assert json.loads((tmp_path / "summary.json").read_text()) == {"a": 2.5, "b": 1}
    assert reporting.write_report(tmp_path, ["no table"]) == "no table\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "summary.json"]


def test_a_recorded_command_of_a_script_that_moved_runs_as_it_does_now():
    assert reporting.runnable("python -m experiments.toy_ablation --rows=initial --runs=10") == \
        "python -m studies.toy_ablation --rows=initial --runs=10"
    assert reporting.runnable("python -m experiments.augmentation_study --variants=plain") == \
        "python -m studies.augmentation_study --variants=plain"
    unchanged = "python -m experiments.campaign --budget_s=480  # seed 0 of [0]"
    assert reporting.runnable(unchanged) == unchanged


def _curve(row, seed, test, pseudo=None, coverage=None, iterations=4):
    """A minimal run record of `row` for the MNIST report's figures: metrics of iterations 0..`iterations`."""
    return {"row": row, "scale": "cpu", "seed": seed, "metrics": [
        {"iteration": t, "test_accuracy": test + 0.01 * t,
         "pseudo_label_accuracy": None if pseudo is None or t == 0 else pseudo + 0.01 * t,
         "pseudo_label_coverage": None if coverage is None or t == 0 else min(1.0, coverage + 0.1 * t)}
        for t in range(iterations + 1)]}


def _drawn(monkeypatch, draw):
    """The figures `draw` makes (mnist_report.plt.close kept from closing them until the end)."""
    from experiments import mnist_report

    figures = []
    monkeypatch.setattr(mnist_report.plt, "close", figures.append)
    draw()
    monkeypatch.undo()
    return figures


def test_rows_sharing_a_panel_differ_in_colour_and_a_row_keeps_its_colour_everywhere(tmp_path, monkeypatch):
    from matplotlib import colors

    from experiments import mnist_report

    colours = mnist_report.ROW_COLOURS
    for name, rows in mnist_report.FIGURE_PANELS:
        assert len({colours[row] for row in rows}) == len(rows), name  # one colour per row, all different
    assert set(colours) == {row for _, rows in mnist_report.FIGURE_PANELS for row in rows}
    # Every panel row ran, with pseudo-labels, and so did two rows of no panel: one colour per row in every axis of
    # both figures, that of ROW_COLOURS for the panels' rows, and no two curves of one axis alike (rows of two
    # panels that meet in the coverage panel may share a colour there, one line dashed; rows of none may not).
    others = ["supervised_600", "supervised_3000"]
    rows = list(colours) + others
    short = {"step_wise_max_entropy_300", "step_wise_above_average_300", "plus_confidence_300", *others}
    records = [_curve(row, seed, 0.8, pseudo=0.85, coverage=0.5 if row in short else 1.0)
               for row in rows for seed in range(2)]
    figures = _drawn(monkeypatch, lambda: (
        mnist_report.plot_learning_curves(records, tmp_path / "curves.png", "curves"),
        mnist_report.plot_pseudo_labels(records, tmp_path / "pseudo.png", "pseudo")))
    assert len(figures) == 2
    titles = [axis.get_title() for axis in figures[1].axes if axis.get_visible()]
    assert titles[-2:] == [mnist_report.OTHER_ROWS, mnist_report.COVERAGE]
    assert len(figures[1].axes[len(titles) - 1].get_lines()) == len(short)
    seen = {}
    for figure in figures:
        for axis in figure.axes:
            if not axis.get_visible():
                continue
            styles = [(colors.to_hex(line.get_color()), line.get_linestyle()) for line in axis.get_lines()]
            assert len(set(styles)) == len(styles), axis.get_title()
            hexes = [style[0] for style in styles]
            for line in axis.get_lines():
                if line.get_label().split(" (")[0].replace(" ", "_") in others:
                    assert hexes.count(colors.to_hex(line.get_color())) == 1, (axis.get_title(), line.get_label())
            for line in axis.get_lines():
                row = line.get_label().split(" (")[0].replace(" ", "_")
                seen.setdefault(row, set()).add(colors.to_hex(line.get_color()))
        mnist_report.plt.close(figure)
    assert set(seen) == set(rows)
    assert all(len(hexes) == 1 for hexes in seen.values()), seen
    assert all(seen[row] == {colors.to_hex(colours[row])} for row in colours)


def test_row_colours_is_a_greedy_colouring_that_keeps_fixed_rows():
    from experiments import mnist_report

    tab10 = list(mnist_report.plt.get_cmap("tab10").colors)
    colours = mnist_report.row_colours([("a", "b"), ("b", "c"), ("a", "c", "d")])
    assert len({colours[row] for row in "acd"}) == 3 and colours["a"] != colours["b"] != colours["c"]
    assert colours["a"] == tab10[0]  # tab10 first
    crowded = mnist_report.row_colours([tuple(f"r{i}" for i in range(12))])
    assert len(set(crowded.values())) == 12  # past ten neighbours: the second palette's colours
    assert set(tab10) < set(crowded.values())
    fixed = mnist_report.row_colours([("x", "all_data_max_entropy_300")], fixed=mnist_report.ROW_COLOURS)
    assert fixed["all_data_max_entropy_300"] == mnist_report.ROW_COLOURS["all_data_max_entropy_300"]
    assert fixed["x"] != fixed["all_data_max_entropy_300"]


def test_pseudo_labels_are_drawn_in_the_learning_curves_panels_and_coverage_only_where_it_falls_short(tmp_path,
                                                                                                    monkeypatch):
    from experiments import mnist_report

    records = [_curve(row, seed, 0.8, pseudo=0.85, coverage=1.0)
               for row in ("all_data_max_entropy_300", "semi_supervised_100", "lee_pseudo_label_100")
               for seed in range(2)]
    records += [_curve("step_wise_max_entropy_300", seed, 0.8, pseudo=0.9, coverage=0.4) for seed in range(2)]
    records += [_curve("supervised_100", seed, 0.8, iterations=0) for seed in range(2)]  # no pseudo-labels
    panels, partial, whole = mnist_report.pseudo_label_panels(records)
    assert [(name, [key[0] for key in keys]) for name, keys in panels] == [
        ("Fig. 3 left: threshold and policy", ["all_data_max_entropy_300", "step_wise_max_entropy_300"]),
        ("Fig. 3 right: active vs semi-supervised only", ["all_data_max_entropy_300", "semi_supervised_100"]),
        ("Semi-supervised only, 100 labels", ["semi_supervised_100", "lee_pseudo_label_100"])]
    assert [key[0] for key in partial] == ["step_wise_max_entropy_300"]
    assert {key[0] for key in whole} == {"all_data_max_entropy_300", "semi_supervised_100", "lee_pseudo_label_100"}
    [figure] = _drawn(monkeypatch, lambda: mnist_report.plot_pseudo_labels(records, tmp_path / "p.png", "p"))
    axes = [axis for axis in figure.axes if axis.get_visible()]
    assert [axis.get_title() for axis in axes] == [name for name, _ in panels] + [mnist_report.COVERAGE]
    assert [line.get_label() for line in axes[-1].get_lines()] == ["step wise max entropy 300 (2 runs)"]
    note = axes[-1].get_legend().get_title().get_text().replace("\n", " ")
    assert "whole pool" in note and "lee pseudo label 100" in note
    mnist_report.plt.close(figure)


def test_a_legend_that_would_hide_a_curve_goes_below_its_axis():
    import numpy as np

    from experiments import mnist_report

    plt = mnist_report.plt
    figure, (free, crowded) = plt.subplots(1, 2, figsize=(8, 3), layout="constrained")
    iterations = np.arange(10)
    free.plot(iterations, 90 + iterations, label="rising")
    crowded.plot(iterations, 90 + iterations, label="rising")
    crowded.plot(iterations, 90 - iterations, label="falling into the lower right")
    mnist_report._legends(figure, [free, crowded])
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    for axis in (free, crowded):
        assert not mnist_report._hides(axis, axis.get_legend().get_window_extent(renderer), renderer)
    assert free.get_legend().get_window_extent(renderer).y0 > free.bbox.y0  # inside, lower right
    assert crowded.get_legend().get_window_extent(renderer).y1 < crowded.bbox.y0  # below the axis
    plt.close(figure)
