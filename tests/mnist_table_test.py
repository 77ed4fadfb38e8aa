"""The MNIST presets (paper rows, CPU scale, rows beyond the paper), the reports of experiments/mnist_report.py and
experiments/toy_runs.py (Table 1's), and the provenance every record carries."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from deepbass_jax import algorithm, config as config_lib
from deepbass_jax.workdir import checkpoint
from experiments import mnist_report, provenance, reporting, toy_runs
from experiments.configs import mnist

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"


def _labels_bought(config) -> int:
    """Labels a run of `config` ends with: the initial ones plus every acquisition within the budget."""
    labels = config.initial_per_class * 10
    for iteration in range(1, config.iterations + 1):
        labels += algorithm.acquisition_count(config, iteration, labels)
    return labels


@pytest.mark.parametrize("preset", mnist.PRESETS)
def test_every_preset_is_a_valid_config(preset):
    config = mnist.get_config(preset)
    config_lib.validate(config)
    assert config.preset == preset


def test_paper_rows_have_the_papers_settings():
    config = mnist.get_config("all_data_max_entropy")
    assert (config.mode, config.policy, config.iterations, config.acquire_every, config.acquire_count) == (
        "all_data", "max_entropy", 200, 10, 10)
    assert (config.mc_passes_pool, config.mc_passes_labeled, config.train.upsample) == (10, 100, 20)
    assert config.model.dropout_rate == pytest.approx(0.33) and config.train.batch_size == 256
    assert _labels_bought(config) == 300
    assert _labels_bought(mnist.get_config("all_data_max_entropy_1000")) == 1000
    table_3_as_run = mnist.get_config("step_wise_max_entropy_1000")  # Table 3 as the authors' script ran it
    assert (table_3_as_run.mode, table_3_as_run.policy, _labels_bought(table_3_as_run)) == (
        "step_wise", "max_entropy", 1000)
    everything = mnist.get_config("supervised_60000")  # the authors' code: 100 passes over the 60,000 labels
    assert (everything.initial_all, everything.initial_epochs, everything.train.upsample) == (True, 100, 1)
    assert mnist.get_config("step_wise_above_average").above_average_reference == "mean"  # eq. 14 by default
    assert mnist.get_config("step_wise_above_average_theta").above_average_reference == "theta"
    assert mnist.get_config("all_data_bald").policy == "bald"
    semi = mnist.get_config("semi_supervised_300")
    assert not semi.active and semi.semi_supervised and _labels_bought(semi) == 300
    supervised = mnist.get_config("supervised_1000")
    assert supervised.iterations == 0 and _labels_bought(supervised) == 1000
    assert mnist.get_config("improved_300").train.augment_degrees == 10.0
    assert mnist.get_config("augmented_supervised_50").train.augment_scale == 0.05
    assert mnist.get_config("supervised_50").train.augment_degrees == 0.0


@pytest.mark.parametrize("preset", mnist.CPU_PRESETS)
def test_cpu_scale_buys_the_same_labels_in_a_tenth_of_the_iterations(preset):
    paper, cpu = mnist.get_config(preset[len(mnist.CPU_PREFIX):]), mnist.get_config(preset)
    config_lib.validate(cpu)
    assert cpu.preset == preset and cpu.pool_size == mnist.CPU_POOL_SIZE
    assert cpu.iterations == paper.iterations // min(10, paper.acquire_every)  # dbal_* buy every iteration already
    assert _labels_bought(cpu) == _labels_bought(paper)
    for field in ("mode", "policy", "above_average_reference", "mc_passes_pool", "mc_passes_labeled", "active",
                  "semi_supervised", "initial_per_class", "initial_epochs", "budget", "pool_dropout"):
        assert cpu[field] == paper[field], field
    ramp = ("pseudo_ramp_start", "pseudo_ramp_end")  # a ramp of mu spans a tenth of the iterations, rounded up
    assert [cpu.train[f] for f in ramp] == [-(-paper.train[f] // 10) for f in ramp]
    assert {k: v for k, v in cpu.train.items() if k not in ramp} == {k: v for k, v in paper.train.items()
                                                                      if k not in ramp}


@pytest.mark.parametrize("preset", mnist.PRESETS)
def test_each_preset_sets_what_its_name_says(preset):
    """Key fields of every preset against what its name promises (a check independent of the preset table)."""
    config, default = mnist.get_config(preset), config_lib.default_config()
    labels = int(preset.rsplit("_", 1)[1]) if preset[-1].isdigit() else 300
    combination = preset.startswith(("plus_300", "plus_1000", "plus_semi_supervised_100", "plus_confident",
                                     "plus_aligned"))
    augmented = preset.startswith(("augmented_", "improved_", "shift_augmented_")) or combination
    assert (config.train.augment_degrees, config.train.augment_scale) == ((10.0, 0.05) if augmented else (0.0, 0.0))
    assert config.train.augment_shift == (0.1 if preset.startswith("shift_") else 0.0)
    # DeepBASS+'s additions: each on in its own preset and in the combination, off everywhere else.
    assert config.train.strong_augment == (combination or preset == "plus_consistency")
    assert config.pseudo_alignment == preset.startswith(("plus_aligned", "plus_alignment"))
    assert config.pseudo_confidence == (0.95 if preset.startswith(("plus_confidence", "plus_confident")) else 0.0)
    assert config.restart_epochs == (20 if combination or preset == "plus_restart" else 0)
    # The baselines without MC dropout: Lee's Pseudo-Label, and the paper's semi-supervised ablation.
    lee = preset.startswith("lee_")
    assert config.train.pseudo_targets == ("step" if lee else "iteration")
    assert (config.train.pseudo_ramp_start, config.train.pseudo_ramp_end) == ((0, 25) if lee else (0, 0))
    assert (config.train.pseudo_weight, config.train.pseudo_balance) == ((3.0, True) if lee else (1.0, False))
    deterministic = lee or preset.startswith("deterministic_")
    dbal = preset.startswith("dbal_")  # Gal et al. 2017's protocol: T' = 100 on 2,000 samples, a fresh network
    kirsch = preset.endswith("bald_mnist")  # Kirsch et al. 2019's: T' = 100 on the whole pool, a fresh network
    unscored = deterministic or preset.endswith("dbal_random")  # random acquisition reads no score (dbal_test.py)
    passes = 1 if unscored else 100 if dbal or kirsch else 10
    assert (config.pool_dropout, config.mc_passes_pool) == (not deterministic, passes)
    assert (config.pool_subset, config.retrain_epochs) == ((2000, 50) if dbal else (0, 6) if kirsch else (0, 0))
    assert config.train.even_batches == dbal  # no batch of the few samples left over (studies/dbal_last_batch.py)
    assert (config.batch_candidates, config.batch_passes) == (1000, 100)  # used by the batchbald policy alone
    if preset == "smoke":
        assert (config.pool_size, config.iterations, config.acquire_every, config.budget) == (2000, 10, 2, 150)
    elif lee:  # semi-supervised only, like semi_supervised_N
        assert (config.active, config.semi_supervised, config.mode) == (False, True, "all_data")
        assert (config.initial_per_class, config.budget, config.iterations) == (labels // 10, labels, 200)
        assert config.train.upsample == default.train.upsample
    elif dbal:  # active learning alone: 20 balanced labels, then 10 in each of 98 iterations
        assert (config.active, config.semi_supervised, config.policy) == (True, False, preset.removeprefix("dbal_"))
        assert (config.initial_per_class, config.acquire_every, config.acquire_count, config.iterations) == (
            2, 1, 10, 98)
        assert _labels_bought(config) == config.budget == 1000 and mnist.row(preset) == preset + "_1000"
        assert (config.train.upsample, config.train.batch_size, config.initial_epochs) == (1, 128, 50)
        assert not algorithm.computes_theta(config)
    elif kirsch:  # active learning alone: 20 balanced labels, then 10 in each of 28 iterations, 120 passes each
        assert (config.active, config.semi_supervised, config.policy) == (True, False, preset.removesuffix("_mnist"))
        assert (config.initial_per_class, config.acquire_every, config.acquire_count, config.iterations) == (
            2, 1, 10, 28)
        assert _labels_bought(config) == config.budget == 300 and mnist.row(preset) == preset + "_300"
        assert (config.train.upsample, config.train.batch_size, config.initial_epochs) == (20, 64, 6)
        assert not algorithm.computes_theta(config)
    elif "supervised" in preset:
        supervised = "semi_supervised" not in preset
        assert (config.active, config.semi_supervised) == (False, not supervised)
        assert (config.initial_per_class, config.budget) == (labels // 10, labels)
        assert config.iterations == (0 if supervised else default.iterations)
        assert config.train.upsample == (1 if labels == 60000 else default.train.upsample)
    else:
        mode = "step_wise" if preset.startswith("step_wise_") else "all_data"
        policy = preset.removeprefix(mode + "_").removesuffix("_1000").removesuffix("_theta")
        assert (config.active, config.semi_supervised, config.mode) == (True, True, mode)
        assert config.policy == (policy if not preset.startswith(("improved_", "plus_")) else "max_entropy")
        assert config.above_average_reference == ("theta" if preset.endswith("_theta") else "mean")
        assert _labels_bought(config) == config.budget == labels
    assert config.data.name == "mnist" and config.pool_size == (2000 if preset == "smoke" else 0)


@pytest.mark.parametrize("preset", mnist.PRESETS)
def test_eq_8_theta_is_computed_where_a_preset_uses_it(preset):
    """Step-wise pseudo-labels and above average vs theta use eq. 8; all data (theta = 1), semi-supervised only
    and supervised rows run no ground-truth MC passes for it unless config.log_theta asks."""
    config = mnist.get_config(preset)
    used = preset.startswith("step_wise_") or preset.endswith("_above_average_theta")
    assert algorithm.theta_is_used(config) == algorithm.computes_theta(config) == used
    config.log_theta = True
    assert algorithm.computes_theta(config)
    config.theta = 0.3  # a fixed threshold needs no passes
    assert not algorithm.computes_theta(config)


def test_unknown_and_unscalable_presets_are_refused():
    for name in ("nosuch", "cpu_supervised_60000", "cpu_smoke", "cpu_cpu_supervised_100"):
        with pytest.raises(ValueError, match="unknown mnist preset"):
            mnist.get_config(name)


def test_table_row_names():
    assert mnist_report.table_row("cpu_all_data_max_entropy") == "all_data_max_entropy_300"
    assert mnist_report.table_row("all_data_max_entropy_1000") == "all_data_max_entropy_1000"
    assert mnist_report.table_row("cpu_semi_supervised_100") == "semi_supervised_100"
    assert mnist_report.table_row("step_wise_above_average_theta") == "step_wise_above_average_theta_300"
    assert mnist_report.table_row("improved_300") == "improved_300"
    assert mnist_report.table_row("cpu_lee_100") == "lee_pseudo_label_100"
    for preset in mnist.PRESETS:  # a row is named by its label count, at every scale
        row = mnist_report.table_row(preset)
        assert row in (preset, preset + "_300", preset + "_1000", preset.replace("lee_", "lee_pseudo_label_")), preset
        if mnist.CPU_PREFIX + preset in mnist.CPU_PRESETS:
            assert mnist_report.table_row(mnist.CPU_PREFIX + preset) == row
    with pytest.raises(ValueError, match="unknown mnist preset"):
        mnist_report.table_row("cpu_smoke")


def _record(preset, seed, accuracy, iterations=3, dataset="mnist"):
    config = mnist.get_config(preset)
    metrics = [{"iteration": 0, "labels": 100, "test_accuracy": 0.8}] + [
        {"iteration": t, "labels": 100 + 10 * t, "test_accuracy": 0.8 + (accuracy / 100 - 0.8) * t / iterations,
         "pseudo_label_accuracy": None if not config.semi_supervised else 0.9 + 0.01 * t,
         "pseudo_label_coverage": None if not config.semi_supervised else 1.0}
        for t in range(1, iterations + 1 if config.iterations else 1)]
    return {
        "row": mnist_report.table_row(preset), "preset": preset, "seed": seed, "dataset": dataset,
        "scale": "cpu" if preset.startswith("cpu_") else "paper", "test_accuracy": accuracy,
        "config": json.loads(config.to_json_best_effort()), "summary": {"labels": metrics[-1]["labels"]},
        "metrics": metrics, "command": f"python -m experiments.main --config=...:{preset} --config.seed={seed}",
        "device": "CPU (cpu)", "commit": "abc1234", "seconds": 60.0,
    }


def _write_runs(outdir, records):
    for record in records:
        (outdir / "runs" / record["preset"]).mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(outdir / "runs" / record["preset"] / f"seed_{record['seed']}.json", record)


def test_report_from_runs(tmp_path):
    records = [_record("cpu_supervised_100", s, a) for s, a in enumerate((80.0, 82.0, 84.0))]
    records += [_record("cpu_semi_supervised_100", s, a) for s, a in enumerate((90.0, 91.0, 92.0))]
    records += [_record("cpu_all_data_max_entropy", s, a) for s, a in enumerate((95.5, 96.0, 96.5))]
    records += [_record("all_data_max_entropy", 0, 97.5), _record("cpu_all_data_above_average_theta", 0, 94.0)]
    _write_runs(tmp_path, records)
    table = mnist_report.write_report(tmp_path)
    assert json.loads((tmp_path / "table.json").read_text()) == table
    supervised = table["supervised_100"]
    assert supervised["mean"] == 82.0 and supervised["std"] == 2.0 and supervised["runs"] == 3
    assert supervised["paper"] == 82.03 and supervised["scale"] == "cpu" and supervised["seeds"] == [0, 1, 2]
    # The same row at both scales: the paper-scale one keeps the name.
    assert table["all_data_max_entropy_300"]["scale"] == "paper" and table["all_data_max_entropy_300"]["runs"] == 1
    assert table["all_data_max_entropy_300"]["std"] is None
    assert table["all_data_max_entropy_300_cpu"]["mean"] == 96.0
    assert "vs theta (authors' code)" in table["all_data_above_average_theta_300"]["notes"]
    assert table["all_data_above_average_theta_300"]["paper"] is None
    readme = (tmp_path / "README.md").read_text()
    assert "| supervised_100 | cpu | 82.00 (2.00) | 3 | s0: 80.00, s1: 82.00, s2: 84.00 | 82.03 (1.95) |" in readme
    assert "cpu_semi_supervised_100 --config.seed=2" in readme
    for figure in ("learning_curves_cpu.png", "pseudo_labels_cpu.png", "learning_curves_paper.png",
                   "pseudo_labels_paper.png"):
        assert (tmp_path / figure).stat().st_size > 10_000, figure
        assert f"`{figure}`" in readme


def test_runs_of_two_scales_or_lengths_never_share_a_curve(tmp_path):
    """A row run at paper and at CPU scale gets a curve in each scale's figure, each spanning its own iterations;
    runs of one scale but two lengths get a curve each; the one-figure layout's files are removed."""
    records = [_record("all_data_max_entropy", s, 97.0, iterations=200) for s in range(2)]
    records += [_record("cpu_all_data_max_entropy", s, 95.0, iterations=20) for s in range(3)]
    records += [_record("cpu_semi_supervised_100", 0, 90.0, iterations=20),
                _record("cpu_semi_supervised_100", 1, 90.0, iterations=10)]
    groups = mnist_report.curve_groups(records)
    assert {key: len(group) for key, group in groups.items()} == {
        ("all_data_max_entropy_300", "paper", 200): 2, ("all_data_max_entropy_300", "cpu", 20): 3,
        ("semi_supervised_100", "cpu", 10): 1, ("semi_supervised_100", "cpu", 20): 1}
    iterations, values = mnist_report._curves(groups[("all_data_max_entropy_300", "paper", 200)], "test_accuracy")
    assert iterations[-1] == 200 and values.shape == (2, 201)  # the paper's curve is not cut to the CPU's length
    paper = mnist_report.plot_learning_curves([r for r in records if r["scale"] == "paper"],
                                              tmp_path / "paper.png", "paper")
    assert paper == {"Fig. 3 left: threshold and policy": ["all data max entropy 300 (2 runs)"]}
    cpu = mnist_report.plot_pseudo_labels([r for r in records if r["scale"] == "cpu"], tmp_path / "cpu.png", "cpu")
    assert cpu == ["all data max entropy 300 (3 runs)", "semi supervised 100, 10 iterations (1 run)",
                   "semi supervised 100, 20 iterations (1 run)"]
    (tmp_path / "learning_curves.png").write_bytes(b"a figure of the one-figure layout")
    _write_runs(tmp_path, records)
    mnist_report.write_report(tmp_path)
    assert sorted(path.name for path in tmp_path.glob("*.png")) == [
        "cpu.png", "learning_curves_cpu.png", "learning_curves_paper.png", "paper.png", "pseudo_labels_cpu.png",
        "pseudo_labels_paper.png"]


def test_ordering_check():
    table = {"supervised_100": {"mean": 80.0}, "semi_supervised_100": {"mean": 90.0},
             "all_data_max_entropy_300": {"mean": 95.0}}
    assert mnist_report.ordering_check(table).endswith("holds.")
    table["all_data_max_entropy_300"]["mean"] = 94.9
    assert "does NOT hold" in mnist_report.ordering_check(table)
    table["all_data_max_entropy_300"]["mean"] = 96.0
    table["semi_supervised_100"]["mean"] = 79.0
    assert "does NOT hold" in mnist_report.ordering_check(table)
    assert mnist_report.ordering_check({"supervised_100": {"mean": 80.0}}) is None


def test_another_data_sets_rows_carry_no_paper_numbers(tmp_path):
    """The paper's numbers are MNIST's: a Fashion-MNIST row of the same preset has none in table.json or README."""
    records = [_record("supervised_100", s, a, dataset="fashion_mnist") for s, a in enumerate((70.0, 72.0))]
    _write_runs(tmp_path, records)
    table = mnist_report.write_report(tmp_path)
    assert table["supervised_100"]["mean"] == 71.0
    assert (table["supervised_100"]["paper"], table["supervised_100"]["paper_std"]) == (None, None)
    assert "| supervised_100 | paper | 71.00 (1.41) | 2 | s0: 70.00, s1: 72.00 | - |" in (tmp_path / "README.md").read_text()
    assert mnist_report.make_table([_record("supervised_100", 0, 70.0)])["supervised_100"]["paper"] == 82.03


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_checked_in_tables_come_from_checked_in_runs(dataset):
    """Every number of results/<dataset>/table.json is recomputed from the per-run files beside it."""
    outdir = RESULTS / dataset
    if not (outdir / "table.json").exists():
        pytest.fail(f"{outdir / 'table.json'} is missing: run experiments/mnist_report.py (see its docstring).")
    records = mnist_report.load_records(outdir)
    assert records, f"{outdir / 'runs'} holds no runs"
    assert json.loads((outdir / "table.json").read_text()) == mnist_report.make_table(records)
    for record in records:
        assert record["dataset"] == dataset
        network = (record["summary"]["restart"] if record.get("network") == "restart"  # a clean restart's own
                   else record["metrics"][-1])
        assert record["test_accuracy"] == pytest.approx(100 * network["test_accuracy"])
        assert record["config"]["seed"] == record["seed"] and record["config"]["preset"] == record["preset"]
        assert np.isfinite(record["test_accuracy"])


def test_commit_honours_the_environment_and_survives_without_git(monkeypatch):
    monkeypatch.setenv("DEEPBASS_COMMIT", "abc1234 (copied tree)")
    assert provenance.commit() == "abc1234 (copied tree)"
    monkeypatch.delenv("DEEPBASS_COMMIT")
    monkeypatch.setenv("PATH", "")  # no git executable
    assert provenance.commit() == "unknown"


def test_checked_in_toy_table_comes_from_checked_in_runs(tmp_path):
    """results/toy/table.json is what `toy_table --report_only` makes from results/toy/runs, std the sample std."""
    toy = RESULTS / "toy"
    shutil.copytree(toy / "runs", tmp_path / "runs")
    toy_runs.write_report(tmp_path)  # what `python -m experiments.toy_table --report_only` does
    table = json.loads((tmp_path / "table.json").read_text())
    assert table == json.loads((toy / "table.json").read_text())
    records = [json.loads(path.read_text()) for path in (toy / "runs").glob("initial_seed*.json")]
    accuracies = [100 * record["summary"]["test_accuracy"] for record in records]
    assert table["initial"]["runs"] == len(records) > 1
    assert table["initial"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    readme = (tmp_path / "README.md").read_text()
    assert readme.replace(str(tmp_path), "results/toy") == (toy / "README.md").read_text()


def test_a_clean_restart_gives_its_network_the_row_and_the_iterations_network_a_row_beside(tmp_path):
    records = []
    for seed, (restart, iterations) in enumerate(((97.0, 95.0), (98.0, 96.0))):
        records += reporting.with_restart(_record("cpu_plus_restart", seed, iterations),
                                          {"epochs": 20, "test_accuracy": restart / 100})
    assert reporting.with_restart(records[0], None) == [records[0]]
    for record in records:
        path = reporting.record_path(tmp_path, record["preset"], record)
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(path, record)
    assert sorted(p.name for p in (tmp_path / "runs" / "cpu_plus_restart").iterdir()) == [
        "seed_0.json", "seed_0_before_restart.json", "seed_1.json", "seed_1_before_restart.json"]
    table = mnist_report.write_report(tmp_path)
    assert table["plus_restart_300"]["per_seed"] == [97.0, 98.0]
    assert table["plus_restart_300_before_restart"]["per_seed"] == [95.0, 96.0]
    assert table["plus_restart_300"]["notes"].endswith("the restart's network")
    assert "before the restart" in table["plus_restart_300_before_restart"]["notes"]


def test_the_confusion_figure_shows_the_paper_methods_worst_run_beside_deepbass_plus_on_its_seed(tmp_path):
    def counted(preset, seed, wrong_7_as_9):
        record = _record(preset, seed, 95.0)
        for line in record["metrics"][1:]:
            counts = np.diag(np.full(10, 50))
            counts[7, 9] = wrong_7_as_9
            line["pseudo_label_confusion"] = counts.tolist()
            line["pseudo_label_accuracy"] = 500 / (500 + wrong_7_as_9)
        return record

    records = [counted("cpu_all_data_max_entropy", 0, 5), counted("cpu_all_data_max_entropy", 1, 40),
               counted("cpu_plus_300", 1, 2)]
    records[2]["row"] = mnist_report.HEALTHY_ROW
    words = mnist_report.plot_confusions(records, tmp_path / "c.png", "title")
    assert "seed 1" in words and "plus 300 before restart on the same seed" in words
    assert (tmp_path / "c.png").stat().st_size > 10_000
    assert mnist_report.plot_confusions([_record("cpu_all_data_max_entropy", 0, 95.0)], tmp_path / "n.png", "t") is None
    assert not (tmp_path / "n.png").exists()


def test_paired_comparisons_take_the_differences_on_the_seeds_both_rows_ran():
    records = [_record("cpu_supervised_100", s, a) for s, a in enumerate((80.0, 82.0, 84.0))]
    records += [_record("cpu_semi_supervised_100", s, a) for s, a in ((0, 90.0), (1, 86.0))]
    lines = mnist_report.comparison_lines(records)
    assert "### Semi-supervised only with 100 labels, CPU scale (6,000-image pool, a tenth of the iterations)" in lines
    assert "| supervised, 100 labels | supervised_100 | 3 | 82.00 (2.00) | -7.00 (4.24) on 2 seeds | 0, 1, 2 |" in lines
    assert mnist_report.comparison_lines(records[:3]) == []  # no reference row: no table


def test_the_comparators_rows_sit_beside_deepbass_with_table_3s_numbers(tmp_path):
    """Lee's and the deterministic rows join the 100-label comparison, DBAL's rows carry Table 3's numbers and
    the 1,000-label comparison, and each group gets a learning-curve panel (panels in lines of three)."""
    records = [_record("cpu_semi_supervised_100", s, a) for s, a in ((0, 90.0), (1, 88.0))]
    records += [_record("cpu_deterministic_semi_supervised_100", s, a) for s, a in ((0, 85.0), (1, 84.0))]
    records += [_record("cpu_lee_100", s, a) for s, a in ((0, 83.0), (1, 82.0))]
    records += [_record("dbal_bald", s, a, iterations=98) for s, a in ((0, 98.0), (1, 97.6))]
    records += [_record("dbal_random", s, a, iterations=98) for s, a in ((0, 96.0), (1, 95.0))]
    records += [_record("all_data_max_entropy_1000", s, a, iterations=900) for s, a in ((0, 99.0), (1, 98.8))]
    records += [_record("cpu_all_data_max_entropy", s, 95.0) for s in range(2)]
    lines = mnist_report.comparison_lines(records)
    assert ("| the paper's ablation: pool inference without MC dropout (T' = 1) | deterministic_semi_supervised_100 "
            "| 2 | 84.50 (0.71) | -4.50 (0.71) on 2 seeds | 0, 1 |") in lines
    assert ("| Lee's pseudo-label (the deterministic network's targets, every step) | lee_pseudo_label_100 | 2 | "
            "82.50 (0.71) | -6.50 (0.71) on 2 seeds | 0, 1 |") in lines
    assert "| DBAL, BALD (Gal et al. 2017) | dbal_bald_1000 | 2 | 97.80 (0.28) | -1.10 (0.14) on 2 seeds | 0, 1 |" in lines
    table = mnist_report.make_table(records)
    assert table["dbal_bald_1000"]["paper"] == 98.20 and table["dbal_random_1000"]["paper"] is None
    assert table["lee_pseudo_label_100"]["paper"] == 83.85  # Lee's own +PL, not the DAE run the paper quotes
    assert table["lee_pseudo_label_100"]["notes"].startswith("all data, no acquisition; Lee's pseudo-labels")
    drawn = mnist_report.plot_learning_curves(records, tmp_path / "curves.png", "comparators")
    assert drawn["Semi-supervised only, 100 labels"] == [
        "semi supervised 100 (2 runs)", "deterministic semi supervised 100 (2 runs)", "lee pseudo label 100 (2 runs)"]
    assert drawn["DBAL protocol (Gal et al. 2017): active learning alone"] == [
        "dbal bald 1000 (2 runs)", "dbal random 1000 (2 runs)"]
    assert len(drawn) == 4  # Fig. 3's two and these two, in two lines of panels
    height, width, _ = mnist_report.plt.imread(tmp_path / "curves.png").shape
    assert (width, height) == (round(110 * 6.5 * 3), round(110 * 4.8 * 2))
