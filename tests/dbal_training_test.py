"""studies/dbal_training.py: DBAL's bought labels, retrained as the run did (its last network reproduced) and
longer, on a finished yin-yang DBAL run."""

import json

import pytest

from deepbass_jax import driver as driver_lib
from deepbass_jax.workdir import runfolder
from studies import dbal_training
from tests.helpers import toy_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished toy DBAL run: 8 + 6 x 2 = 20 labels, each iteration a fresh network trained 3 epochs on each label
    once an epoch (DBAL's upsample 1), in even batches."""
    workdir = tmp_path_factory.mktemp("dbal_run")
    config = toy_config("active", acquire_every=1, budget=20, retrain_epochs=3, pool_subset=30,
                        **{"train.even_batches": True, "train.batch_size": 16, "train.upsample": 1})
    driver_lib.Driver(config, workdir).run()
    return workdir


def test_upsample_1_reproduces_the_runs_last_network(finished_run):
    run = dbal_training.FinishedRun(finished_run)
    assert (len(run.indices), run.name) == (20, "active seed 0")
    table = dbal_training.study([run], [1, 4], finished_run / "table.json")
    entry = table["runs"][run.name]
    assert entry["networks"]["1"]["test_accuracy"] == pytest.approx(100 * run.last_line["test_accuracy"], abs=1e-9)
    assert entry["networks"]["1"]["own_label_accuracy"] == pytest.approx(
        100 * run.last_line["ground_truth_accuracy"], abs=1e-9)
    # 20 labels in batches of 16: 2 steps an epoch, 3 epochs; x 4: 80 draws, 5 steps an epoch
    assert (entry["networks"]["1"]["steps"], entry["networks"]["4"]["steps"]) == (6, 15)
    assert sorted(entry["bought"]) == entry["bought"] and len(set(entry["bought"])) == 20


def test_a_killed_study_resumes_and_the_report_gives_every_network(finished_run, monkeypatch):
    run = dbal_training.FinishedRun(finished_run)
    table_path = finished_run / "resumed.json"
    dbal_training.study([run], [1], table_path)
    calls = []
    original = dbal_training.accuracies
    monkeypatch.setattr(dbal_training, "accuracies", lambda *a: calls.append(a[-1]) or original(*a))
    table = dbal_training.study([run], [1, 2], table_path)
    assert calls == [2]  # x 1 was already in the table
    assert json.loads(table_path.read_text())["runs"][run.name]["networks"].keys() == {"1", "2"}
    text = dbal_training.report(table, finished_run / "report", "python -m studies.dbal_training ...")
    assert "| active seed 0 | 20 |" in text and "retrained x 2" in text
    assert text.count("| - | - |") == 1  # the toy's row: no Table 3 figure, no published curve
    assert (finished_run / "report" / "table.json").exists()
    assert f"Networks of active seed 0 trained at commit {table['runs'][run.name]['commit']}" in text


def test_the_reports_command_names_the_runs_of_earlier_invocations_too(finished_run):
    run = dbal_training.FinishedRun(finished_run)
    table = dbal_training.study([run], [1], finished_run / "earlier.json")
    table["runs"]["dbal_bald seed 0"] = {**table["runs"][run.name], "folder": "/elsewhere/dbal_bald/seeds_0_0",
                                         "commit": "f93fad8"}
    command = dbal_training.command(table, "/data/mnist", ["1", "5"], finished_run / "out")
    assert f"--runs={finished_run},/elsewhere/dbal_bald/seeds_0_0 --upsample=1,5" in command
    assert command.startswith("python -m studies.dbal_training --data_dir=/data/mnist ")
    text = dbal_training.report(table, finished_run / "report_two", command)
    assert "Networks of dbal_bald seed 0 trained at commit f93fad8" in text


def test_an_mnist_dbal_row_stands_beside_table_3_and_gal_et_als_curves():
    entry = {"dataset": "mnist", "preset": "dbal_bald", "policy": "bald", "labels": 1000}
    assert dbal_training._published(entry) == "98.20 | 98.20 / 98.21"  # Table 3's 1.80 % error; their curves' ends
    assert dbal_training._published({**entry, "dataset": "fashion_mnist"}) == "- | -"


def test_runs_it_cannot_use_are_refused(tmp_path, finished_run):
    with pytest.raises(FileNotFoundError):
        dbal_training.FinishedRun(tmp_path)
    config = json.loads((finished_run / runfolder.CONFIG).read_text())
    other = tmp_path / "not_dbal"
    other.mkdir()
    (other / runfolder.CONFIG).write_text(json.dumps({**config, "retrain_epochs": 0}))
    with pytest.raises(ValueError, match="not a DBAL run"):
        dbal_training.FinishedRun(other)
