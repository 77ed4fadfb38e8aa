"""Several processes, one run (jax.distributed, gloo between CPU processes on 127.0.0.1): the pieces against one
process in 2 and 4 processes, the toy end to end against one, and a killed process followed by a resume. The
4-process toy and the kills are `slow` (`pytest -m slow tests/multiprocess_test.py`): the default suite stays
under 10 minutes on 2 cores."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from deepbass_jax import driver as driver_lib
from deepbass_jax.parallel import distributed
from deepbass_jax.workdir import checkpoint, runfolder
from tests.helpers import toy_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOY_FLAGS = ["--config=experiments/configs/yinyang.py", "--config.data.num_per_class=100", "--config.iterations=6",
             "--config.budget=14", "--config.initial_epochs=60", "--config.initial_patience=0",
             "--config.chunk_size=64", "--config.labeled_chunk_size=16", "--config.mc_passes_labeled=20",
             "--config.train.batch_size=64", "--config.figures=false"]


def _launch(count: int, command, extra_env=None, timeout=240):
    """Starts `command(port, process_id)` in `count` processes; returns [(returncode, stderr, stdout)] by id."""
    port = distributed.free_local_port()
    processes = []
    for index in range(count):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", **((extra_env or {}).get(index, {}))}
        processes.append(subprocess.Popen([sys.executable, *command(port, index)], cwd=ROOT, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=timeout)
            results.append((process.returncode, stderr, stdout))
    finally:
        for process in processes:
            process.kill()
    return results


def _toy_run(count, workdir, extra_env=None):
    return _launch(count, lambda port, index: [
        "-m", "experiments.main", *TOY_FLAGS, f"--workdir={workdir}", f"--coordinator_address=127.0.0.1:{port}",
        f"--num_processes={count}", f"--process_id={index}"], extra_env)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The toy run by one process: what every several-process run must match."""
    workdir = tmp_path_factory.mktemp("one_process")
    driver_lib.run(toy_config(initial_per_class=4), workdir)  # the config TOY_FLAGS give, in this process
    return workdir


def _assert_same_run(workdir, reference):
    assert (checkpoint.read_jsonl(workdir / runfolder.ORACLE_LOG)
            == checkpoint.read_jsonl(reference / runfolder.ORACLE_LOG)), "other labels were bought"
    lines, expected = (checkpoint.read_jsonl(w / runfolder.METRICS) for w in (workdir, reference))
    assert [m["iteration"] for m in lines] == [m["iteration"] for m in expected]
    for line, want in zip(lines, expected):
        for key in ("labels", "bought", "pseudo_labeled", "d_size"):
            assert line.get(key) == want.get(key), (line["iteration"], key)
        for key in ("theta", "mean_pool_entropy", "train_loss", "test_accuracy", "ground_truth_accuracy"):
            if want.get(key) is not None:  # the training sums run in another order: round-off only
                assert line[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), (line["iteration"], key)


@pytest.mark.parametrize("count", [2, pytest.param(4, marks=pytest.mark.slow)])  # 4 processes: 31 s on 2 cores
def test_the_pieces_match_one_process(tmp_path, count):
    out = tmp_path / "found.json"
    results = _launch(count, lambda port, index: ["-m", "tests.multiprocess_check", str(port), str(count), str(index),
                                                  str(out)])
    assert all(result[0] == 0 for result in results), results
    found = json.loads(out.read_text())
    assert found["count"] == count
    assert found["scores_bitwise"], "MC-dropout scores of the shards differ from one process's"
    assert found["rows_right"]
    assert found["steps"][0] == found["steps"][1]
    assert found["loss"][0] == pytest.approx(found["loss"][1], rel=1e-5)
    assert found["accuracy"][0] == found["accuracy"][1]
    assert found["largest_relative_param_difference"] < 1e-5


@pytest.mark.parametrize("count", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_the_toy_in_several_processes_buys_the_labels_of_one_process(tmp_path, one_process, count):
    results = _toy_run(count, tmp_path / "run")
    assert [result[0] for result in results] == [0] * count, results[0][1][-3000:]
    reports = [[line for line in result[2].splitlines() if not line.startswith("[Gloo]")] for result in results]
    assert reports[0][0].startswith("test accuracy") and not any(reports[1:])  # process 0 alone reports
    _assert_same_run(tmp_path / "run", one_process)
    assert not list((tmp_path / "run").glob("seed_*"))  # one run folder, written by process 0


@pytest.mark.slow
@pytest.mark.parametrize("killed", [1, 0])
def test_a_killed_process_stops_the_run_and_the_same_launch_resumes_it(tmp_path, one_process, killed):
    workdir = tmp_path / "run"
    results = _toy_run(2, workdir, extra_env={killed: {"DEEPBASS_FAULT_AT": "iteration:3"}})
    assert results[killed][0] == -9  # killed at the start of iteration 3
    code, stderr, _ = results[1 - killed]
    assert code == 1
    last = stderr.strip().splitlines()[-1]
    assert "another process of the run is gone" in last and "resume from the checkpoint after iteration 2" in last
    assert [m["iteration"] for m in checkpoint.read_jsonl(workdir / runfolder.METRICS)] == [0, 1, 2]
    results = _toy_run(2, workdir)
    assert [result[0] for result in results] == [0, 0], results[0][1][-3000:]
    _assert_same_run(workdir, one_process)
    assert np.isfinite(json.loads((workdir / runfolder.SUMMARY).read_text())["test_accuracy"])
