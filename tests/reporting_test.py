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
