"""The driver (Algorithm 3.1) end to end on the toy and on a few hundred MNIST images."""

import json

import jax
import numpy as np
import pytest

from deepbass_jax import algorithm, driver as driver_lib, oracle
from deepbass_jax.workdir import checkpoint, runfolder
from experiments.configs import mnist as mnist_configs
from experiments.configs import yinyang as yinyang_configs
from tests.compilations import count_compilations
from tests.helpers import answer_round, toy_config


def _run_tracking_states(config, workdir):
    """Runs the driver iteration by iteration, returning the states (copied) after each iteration."""
    driver = driver_lib.Driver(config, workdir)
    driver.initial_fit()
    history = [(driver.state.ground_truth.copy(), driver.state.pseudo.copy())]
    for _ in range(config.iterations):
        driver.iterate()
        history.append((driver.state.ground_truth.copy(), driver.state.pseudo.copy()))
    return history


def _oracle_log(workdir):
    return checkpoint.read_jsonl(workdir / runfolder.ORACLE_LOG)


def test_toy_run_writes_a_complete_run_directory(tmp_path):
    summary = driver_lib.run(toy_config(figures=True), tmp_path)
    metrics = checkpoint.read_jsonl(tmp_path / runfolder.METRICS)
    assert [m["iteration"] for m in metrics] == list(range(7))
    assert [m["labels"] for m in metrics] == [8, 10, 10, 12, 12, 14, 14]
    line = metrics[-1]
    for key in ("theta", "mean_pool_entropy", "test_accuracy", "ground_truth_accuracy", "pseudo_label_accuracy",
                "pseudo_label_coverage", "pseudo_labeled", "d_size", "seconds"):
        assert line[key] is not None, key
    assert 0 <= line["theta"] <= 1 and 0 <= line["pseudo_label_coverage"] <= 1
    assert summary["labels"] == 14 and summary["test_accuracy"] == line["test_accuracy"]
    assert line["test_accuracy"] > 0.6  # well above chance on the toy
    for name in ("config.json", "summary.json", "curves.png", "decision_boundary.png", runfolder.CHECKPOINT):
        assert (tmp_path / name).exists(), name
    log = _oracle_log(tmp_path)
    assert len(log) == 14 and len({e["index"] for e in log}) == 14
    assert [e["iteration"] for e in log] == [0] * 8 + [1, 1, 3, 3, 5, 5]
    assert json.loads((tmp_path / "config.json").read_text())["policy"] == "max_entropy"


def test_without_figures_a_run_draws_none_and_may_turn_them_on_when_resumed(tmp_path):
    """config.figures=False: the finished run has its summary and no PNG; the field may change on resume (it
    changes nothing the run computes), so a stopped run can be finished with figures."""
    finished, resumed = tmp_path / "finished", tmp_path / "resumed"
    driver_lib.run(toy_config(), finished)  # figures off (tests.helpers.toy_config)
    assert (finished / runfolder.SUMMARY).exists() and not list(finished.glob("*.png"))
    assert driver_lib.Driver(toy_config(), resumed).run(should_stop=lambda: True) is None  # stopped after the fit
    driver_lib.run(toy_config(figures=True), resumed)
    assert sorted(p.name for p in resumed.glob("*.png")) == ["curves.png", "decision_boundary.png"]
    assert checkpoint.read_jsonl(resumed / runfolder.METRICS) != [] and (
        _oracle_log(resumed) == _oracle_log(finished))


def test_all_data_skips_eq_8_unless_asked_and_decides_the_same_either_way(tmp_path, monkeypatch):
    """All data pseudo-labels every unlabeled sample (theta = 1): the T passes over the ground truth for eq. 8 decide
    nothing, so the run skips them and its lines hold theta None; config.log_theta computes theta for the lines,
    and everything else (labels bought, pseudo-labels, metrics, the final checkpoint) stays the same bit for bit."""
    passes = []
    pool_stats = algorithm.pool_stats

    def recording(apply_fn, params, images, keys, num_passes, *args, **kwargs):
        passes.append(num_passes)
        return pool_stats(apply_fn, params, images, keys, num_passes, *args, **kwargs)

    monkeypatch.setattr(algorithm, "pool_stats", recording)
    runs = {}
    for log_theta in (False, True):
        passes.clear()
        config = toy_config(mode="all_data", log_theta=log_theta)  # T = 20 ground-truth passes, T' = 10 pool passes
        workdir = tmp_path / f"log_theta_{log_theta}"
        driver_lib.run(config, workdir)
        lines = checkpoint.read_jsonl(workdir / runfolder.METRICS)[1:]
        runs[log_theta] = {"passes": sorted(set(passes)), "theta": [line["theta"] for line in lines],
                           "lines": [{k: v for k, v in line.items() if k not in ("theta", "seconds", "phase_seconds")}
                                     for line in lines],
                           "oracle_log": (workdir / runfolder.ORACLE_LOG).read_bytes(),
                           "checkpoint": (workdir / runfolder.CHECKPOINT).read_bytes()}
    assert runs[False]["passes"] == [10] and runs[True]["passes"] == [10, 20]
    assert runs[False]["theta"] == [None] * 6
    assert all(0 < theta < 1 for theta in runs[True]["theta"])
    assert runs[False]["lines"][-1]["pseudo_label_coverage"] == 1.0  # every unlabeled sample, as theta = 1 takes
    for key in ("lines", "oracle_log", "checkpoint"):
        assert runs[False][key] == runs[True][key], key


def test_oracle_is_called_budget_over_n_times_with_fresh_indices(tmp_path, monkeypatch):
    calls = []
    original = oracle.SimulatedOracle.label

    def counting_label(self, indices, *display):
        calls.append(np.array(indices))
        return original(self, indices, *display)

    monkeypatch.setattr(oracle.SimulatedOracle, "label", counting_label)
    config = toy_config(iterations=10, acquire_every=1, acquire_count=2, budget=16)
    history = _run_tracking_states(config, tmp_path)
    initial, acquisitions = calls[0], calls[1:]
    assert len(initial) == 8
    assert len(acquisitions) == (16 - 8) // 2  # the budget stops acquisition after 4 of 10 iterations
    asked = np.concatenate(calls)
    assert len(np.unique(asked)) == len(asked)  # never asked twice
    for step, indices in enumerate(acquisitions, start=1):
        labeled_before = history[step - 1][0] >= 0
        assert not labeled_before[indices].any()  # never an already-labeled sample


@pytest.mark.parametrize("mode", ["step_wise", "all_data"])
def test_pseudo_labels_never_touch_ground_truth(tmp_path, mode):
    history = _run_tracking_states(toy_config(mode=mode), tmp_path)
    for (truth_before, pseudo_before), (truth, pseudo) in zip(history, history[1:]):
        labeled, selected = truth >= 0, pseudo >= 0
        assert not np.any(labeled & selected)
        np.testing.assert_array_equal(truth[truth_before >= 0], truth_before[truth_before >= 0])
        if mode == "all_data":
            np.testing.assert_array_equal(selected, ~labeled)
        else:  # D only grows, except for samples that were just bought
            assert np.all(selected | labeled | ~(pseudo_before >= 0))


def test_semi_supervised_off_trains_on_ground_truth_only(tmp_path):
    history = _run_tracking_states(toy_config("active"), tmp_path)
    assert all(np.all(pseudo == -1) for _, pseudo in history)


def test_iterations_do_not_recompile(tmp_path):
    """After the first iterations nothing compiles, not even when labels are bought: the ground truth grows by 2
    in iterations 3 and 5, and its inference and accuracy run on chunks padded to one shape on the host."""
    config = toy_config(iterations=0)
    driver = driver_lib.Driver(config, tmp_path)
    driver.initial_fit()
    for _ in range(2):
        driver.iterate()
    labels = []
    with count_compilations() as compiled:
        for _ in range(3):
            driver.iterate()
            labels.append(int(driver.seeds[0].state.labeled.sum()))
    assert labels == [12, 12, 14]
    assert compiled.total() == 0, dict(compiled)


def _comparable(metrics):
    return [{k: v for k, v in m.items() if k not in ("seconds", "phase_seconds")} for m in metrics]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """An uninterrupted run of the toy config, to compare resumed runs with."""
    workdir = tmp_path_factory.mktemp("straight")
    driver_lib.run(toy_config(), workdir)
    return workdir


@pytest.mark.parametrize("stop_after", range(6))
def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, monkeypatch, straight_run, stop_after):
    """Interrupted between iteration `stop_after` and the next one, then resumed: the same run, bitwise."""
    config = toy_config()
    original = driver_lib.Driver.iterate

    def interrupted(self):
        if self.iteration == stop_after:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(driver_lib.Driver, "iterate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        driver_lib.run(config, tmp_path)
    monkeypatch.setattr(driver_lib.Driver, "iterate", original)
    driver_lib.run(config, tmp_path)

    straight = checkpoint.read_jsonl(straight_run / runfolder.METRICS)
    resumed = checkpoint.read_jsonl(tmp_path / runfolder.METRICS)
    assert _comparable(resumed) == _comparable(straight)
    assert _oracle_log(tmp_path) == _oracle_log(straight_run)
    a = checkpoint.load(straight_run / runfolder.CHECKPOINT)["train_state"]["params"]
    b = checkpoint.load(tmp_path / runfolder.CHECKPOINT)["train_state"]["params"]
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_labels_bought_before_a_crash_are_reused_not_asked_again(tmp_path, monkeypatch):
    config = toy_config(iterations=1)
    original = driver_lib.Driver._save
    saves = []

    def crash_on_second_save(self):
        saves.append(self.iteration)
        if len(saves) == 2:  # after iteration 1 bought its labels, before its checkpoint
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(driver_lib.Driver, "_save", crash_on_second_save)
    with pytest.raises(KeyboardInterrupt):
        driver_lib.run(config, tmp_path)
    monkeypatch.setattr(driver_lib.Driver, "_save", original)
    asked_again = []
    monkeypatch.setattr(oracle.SimulatedOracle, "label", lambda self, i, *display: asked_again.append(i))
    driver_lib.run(config, tmp_path)
    assert asked_again == []
    assert len(_oracle_log(tmp_path)) == 10


def test_finished_runs_are_not_rerun_and_config_changes_are_refused(tmp_path):
    config = toy_config(iterations=1)
    driver_lib.run(config, tmp_path)
    with pytest.raises(driver_lib.RunFinished, match="finished run"):
        driver_lib.run(config, tmp_path)
    other = tmp_path / "other"
    driver_lib.Driver(config, other)
    changed = toy_config(iterations=2)
    with pytest.raises(ValueError, match=r"different config \(fields \['iterations'\] differ\)"):
        driver_lib.Driver(changed, other)
    dispatch = toy_config(iterations=1)
    dispatch.train.steps_per_call = 3  # how the steps reach the device: the same run
    dispatch.model.kernels = "block_diagonal"  # how the network is computed: the same up to round-off
    dispatch.figures = dispatch.log_theta = True  # what a finished run draws, what the lines log: the same run
    driver_lib.Driver(dispatch, other)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("mode", "sometimes", "config.mode='sometimes' is invalid"),
        ("policy", "oracle_knows", "config.policy='oracle_knows' is invalid"),
        ("mc_passes_pool", 0, "config.mc_passes_pool=0 is invalid"),
        ("acquire_count", 0, "config.acquire_count=0 is invalid"),
        ("budget", 5000, "config.budget=5000 exceeds the pool"),
    ],
)
def test_bad_config_fails_before_any_work(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        driver_lib.Driver(toy_config(**{field: value}), tmp_path)


def test_file_oracle_run_stops_for_labels_and_continues(tmp_path):
    config = toy_config(iterations=1, budget=10, oracle="file")
    with pytest.raises(oracle.LabelsPending):
        driver_lib.run(config, tmp_path)
    hidden = driver_lib.Driver(config, tmp_path).seeds[0].hidden_labels  # the person knows the truth

    def answer(round_number):
        return answer_round(tmp_path / "oracle" / f"round_{round_number:04d}", hidden)

    assert answer(0) == 8
    with pytest.raises(oracle.LabelsPending):
        driver_lib.run(config, tmp_path)  # the initial fit ran; iteration 1 asks for 2 labels
    assert answer(1) == 2
    summary = driver_lib.run(config, tmp_path)
    assert summary["labels"] == 10
    log = _oracle_log(tmp_path)
    assert [e["label"] for e in log] == [int(hidden[e["index"]]) for e in log]


def test_mnist_driver_on_a_few_hundred_images(tmp_path, mnist_dir):
    config = mnist_configs.get_config("all_data_max_entropy")
    config.data.source = "dir"
    config.data.data_dir = str(mnist_dir)
    config.pool_size = 300
    config.test_size = 1000
    config.initial_per_class = 2
    config.initial_epochs = 10
    config.iterations = 3
    config.acquire_every = 1
    config.acquire_count = 5
    config.budget = 35
    config.chunk_size = 128
    config.mc_passes_labeled = 10
    summary = driver_lib.run(config, tmp_path)
    metrics = checkpoint.read_jsonl(tmp_path / runfolder.METRICS)
    assert [m["labels"] for m in metrics] == [20, 25, 30, 35]
    assert all(m["pseudo_labeled"] == 300 - m["labels"] for m in metrics[1:])
    assert summary["test_accuracy"] > 0.3  # 35 labels, 10 classes: far above chance (0.1)


@pytest.mark.slow
def test_readme_yinyang_job_reaches_the_papers_accuracy(tmp_path):
    """The README's main job, in full: DeepBASS on the toy, 8 -> 80 labels (paper: 90.33% over 10 runs)."""
    summary = driver_lib.run(yinyang_configs.get_config(), tmp_path)
    assert summary["labels"] == 80
    assert summary["test_accuracy"] >= 0.87


def test_clean_restart_reports_a_fresh_network_and_leaves_the_run_as_it_was(tmp_path, monkeypatch, straight_run):
    """config.restart_epochs: the summary gains the restarted network's held-out metrics; the iterations, the
    oracle's log and the saved network are those of the same run without a restart. Interrupted just before the
    restart, a run resumes to the same restart, bitwise."""
    config = toy_config(restart_epochs=3)
    original = driver_lib.Driver.clean_restart

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(driver_lib.Driver, "clean_restart", interrupted)
    with pytest.raises(KeyboardInterrupt):
        driver_lib.run(config, tmp_path / "resumed")
    monkeypatch.setattr(driver_lib.Driver, "clean_restart", original)
    resumed = driver_lib.run(config, tmp_path / "resumed")
    summary = driver_lib.run(config, tmp_path / "straight")
    assert summary["restart"] == resumed["restart"]
    assert summary["restart"]["epochs"] == 3 and 0.5 < summary["restart"]["test_accuracy"] <= 1
    assert set(summary["restart"]) >= {"test_accuracy", "test_ece", "test_nll"}
    assert summary["test_accuracy"] == json.loads((straight_run / runfolder.SUMMARY).read_text())["test_accuracy"]
    metrics = checkpoint.read_jsonl(tmp_path / "straight" / runfolder.METRICS)
    assert _comparable(metrics) == _comparable(checkpoint.read_jsonl(straight_run / runfolder.METRICS))
    a = checkpoint.load(straight_run / runfolder.CHECKPOINT)["train_state"]["params"]
    b = checkpoint.load(tmp_path / "straight" / runfolder.CHECKPOINT)["train_state"]["params"]
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_deepbass_plus_runs_on_a_few_hundred_mnist_images(tmp_path, mnist_dir):
    """The combination preset (ground-truth augmentation, the strong view, alignment, a restart) end to end, with a
    confidence guard on top: D holds only the samples it keeps, and the lines count their confusions."""
    config = mnist_configs.get_config("cpu_plus_300")
    config.data.source, config.data.data_dir = "dir", str(mnist_dir)
    config.pool_size, config.test_size, config.initial_per_class, config.initial_epochs = 300, 500, 2, 5
    config.iterations, config.acquire_count, config.budget, config.mc_passes_labeled = 2, 5, 30, 10
    config.restart_epochs, config.pseudo_confidence = 10, 0.2
    summary = driver_lib.run(config, tmp_path)
    metrics = checkpoint.read_jsonl(tmp_path / runfolder.METRICS)
    assert [m["labels"] for m in metrics] == [20, 25, 30]
    for line in metrics[1:]:
        assert 0 < line["pseudo_labeled"] < 300 - line["labels"]  # the guard left some samples out of D
        assert np.sum(line["pseudo_label_confusion"]) == line["pseudo_labeled"]
    assert summary["restart"]["epochs"] == 10 and 0.2 < summary["restart"]["test_accuracy"] <= 1
