"""Kill a real run at any moment (SIGKILL, no clean-up) and run the same command again: nothing is lost, no label
is bought twice, and the result is bitwise the uninterrupted run's.

The runs are `python -m experiments.main` on a small toy config, in subprocesses. Moments are drawn with a seeded
RNG; named moments (during the initial fit, tearing an oracle-log line, right after an oracle answer, between the
two renames of a checkpoint save, ...) are forced with `DEEPBASS_FAULT_AT=NAME:N` (see `guard.fault_point`),
others are timed kills while the run iterates (pool inference, training). A shared JAX compilation cache keeps
each restart at a few seconds; a cached executable computes exactly what a fresh compilation does (the
determinism test compares a freshly compiled run with a cached one).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from deepbass_jax import driver as driver_lib, oracle
from deepbass_jax.workdir import checkpoint, guard, runfolder
from tests.helpers import answer_round, toy_config

REPO = pathlib.Path(__file__).resolve().parents[1]
ITERATIONS = 12  # acquisitions of 2 labels in iterations 1, 3, ..., 11: 8 + 12 = 20 labels


def _flags(iterations):
    return [
        "--config=experiments/configs/yinyang.py:active_semi_supervised",
        "--config.data.num_per_class=100",
        "--config.initial_epochs=60",
        "--config.initial_patience=0",
        f"--config.iterations={iterations}",
        f"--config.budget={8 + 2 * ((iterations + 1) // 2)}",
        "--config.chunk_size=64",
        "--config.labeled_chunk_size=64",  # the same chunk shape and passes (10) for pool and ground truth:
        "--config.mc_passes_labeled=10",  # one compilation less for the reference run
        "--config.train.batch_size=64",
        "--config.figures=false",  # matplotlib's 1-2 s in every process whose run finishes
    ]


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


def _attempt(workdir, jax_cache, iterations=ITERATIONS, fault=None, kill=None, num_seeds=1) -> tuple[int, str]:
    """One invocation of the run's command (resuming whatever `workdir` holds): (return code, its output).

    fault: `DEEPBASS_FAULT_AT` for the process; kill(process): called while it runs, may SIGKILL it.
    """
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(jax_cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env.pop(guard.FAULT_ENV, None)
    if fault:
        env[guard.FAULT_ENV] = fault
    log = workdir.parent / f"{workdir.name}.attempt.log"
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", "experiments.main", *_flags(iterations),
                                    f"--config.num_seeds={num_seeds}", f"--workdir={workdir}"],
                                   cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            if kill is not None:
                kill(process)
            code = process.wait(timeout=400)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return code, log.read_text()


def _stamp(path):
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_mtime_ns


def _kill_while_iterating(workdir, delay):
    """SIGKILLs the run `delay` seconds after its checkpoint next changes (it is then in the iterations)."""

    def kill(process):
        path = workdir / runfolder.CHECKPOINT
        before, deadline = _stamp(path), time.monotonic() + 300
        while _stamp(path) == before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)

    return kill


def _kill_after(seconds):
    """SIGKILLs the run `seconds` after it started, wherever it is then."""

    def kill(process):
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)

    return kill


def _folders(workdir, num_seeds=1):
    return [runfolder.seed_folder(workdir, seed, num_seeds) for seed in range(num_seeds)]


def _result(workdir, num_seeds=1) -> dict:
    """What must be bitwise equal between runs: each seed's metrics without wall times and oracle log, the final
    checkpoint (parameters, optimizer states, label sets, oracle states)."""
    return {
        "metrics": [[{k: v for k, v in m.items() if k not in ("seconds", "phase_seconds")}
                     for m in checkpoint.read_jsonl(folder / runfolder.METRICS)] for folder in _folders(workdir, num_seeds)],
        "oracle_log": [(folder / runfolder.ORACLE_LOG).read_bytes() for folder in _folders(workdir, num_seeds)],
        "checkpoint": (workdir / runfolder.CHECKPOINT).read_bytes(),
    }


def _assert_same_run(workdir, reference, num_seeds=1):
    got, expected = _result(workdir, num_seeds), _result(reference, num_seeds)
    assert got["metrics"] == expected["metrics"]
    assert got["oracle_log"] == expected["oracle_log"]
    assert got["checkpoint"] == expected["checkpoint"], "final parameters or state differ"
    for folder, reference_folder in zip(_folders(workdir, num_seeds), _folders(reference, num_seeds)):
        log = checkpoint.read_jsonl(folder / runfolder.ORACLE_LOG)
        indices = [e["index"] for e in log]
        assert len(set(indices)) == len(indices), "a label was bought twice"
        assert sorted(indices) == sorted(e["index"] for e in checkpoint.read_jsonl(reference_folder / runfolder.ORACLE_LOG))
        assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


@pytest.fixture(scope="module")
def reference(tmp_path_factory, jax_cache):
    """An uninterrupted run (compiled afresh: the cache is empty)."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    code, output = _attempt(workdir, jax_cache)
    assert code == 0, output[-3000:]
    return workdir


def test_two_fresh_runs_with_one_seed_are_bitwise_identical(reference, jax_cache, tmp_path):
    code, output = _attempt(tmp_path / "run", jax_cache)
    assert code == 0, output[-3000:]
    _assert_same_run(tmp_path / "run", reference)
    assert json.loads((tmp_path / "run" / runfolder.SUMMARY).read_text())["labels"] == 20


def _corrupt(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _timed_kills_until_the_newest_checkpoint_exists(workdir, jax_cache, attempts=5):
    """A timed kill can fall between the two renames of a save (rarely: the window is two system calls), leaving
    only the previous checkpoint. Each further attempt must resume from it and is killed again, until the newest
    checkpoint exists to be corrupted."""
    for _ in range(attempts):
        if (workdir / runfolder.CHECKPOINT).exists():
            return
        code, output = _attempt(workdir, jax_cache, kill=_kill_while_iterating(workdir, 0.05))
        assert code == -signal.SIGKILL, f"a timed kill missed:\n{output[-3000:]}"
        assert "checkpoint.msgpack is missing" in output and "Resuming from the previous checkpoint" in output
    assert (workdir / runfolder.CHECKPOINT).exists()


def test_a_run_killed_six_times_equals_the_uninterrupted_run(reference, jax_cache, tmp_path):
    rng = np.random.default_rng(2024)
    workdir = tmp_path / "run"
    rounds = [  # (DEEPBASS_FAULT_AT, timed kill, what this attempt must report about the previous kill)
        (f"initial_fit_epoch:{rng.integers(1, 61)}", None, None),  # during the initial fit
        ("mid_append:1", None, None),  # tears iteration 1's second oracle-log line
        ("after_oracle:1", None, "removing a torn last line"),  # the torn label asked again, answer not logged
        (f"checkpoint_rotated:{rng.integers(1, 3)}", None, None),  # between the two renames of a save
        (None, _kill_while_iterating(workdir, rng.uniform(0.0, 0.4)), "checkpoint.msgpack is missing"),
        ("after_oracle_log:1", None, "is corrupted"),  # after a flipped byte in the newest checkpoint
    ]
    for number, (fault, kill, report) in enumerate(rounds):
        if number == 5:
            _timed_kills_until_the_newest_checkpoint_exists(workdir, jax_cache)
            _corrupt(workdir / runfolder.CHECKPOINT)
        code, output = _attempt(workdir, jax_cache, fault=fault, kill=kill)
        assert code == -signal.SIGKILL, f"attempt {number} ({fault}) was not killed:\n{output[-3000:]}"
        if report:
            assert report in output, f"attempt {number} did not report {report!r}:\n{output[-3000:]}"
        if number in (4, 5):
            assert "Resuming from the previous checkpoint" in output
    assert (workdir / (runfolder.CHECKPOINT + ".bad")).exists()  # the corrupted one, kept for inspection
    code, output = _attempt(workdir, jax_cache)
    assert code == 0, output[-3000:]
    _assert_same_run(workdir, reference)


def test_three_seeds_killed_three_times_equal_the_uninterrupted_run(jax_cache, tmp_path):
    """config.num_seeds = 3: one checkpoint for all seeds, each seed's logs in its own folder. Killed during the
    initial fit, between two seeds' oracle-log appends and between the two renames of a save; the files end as
    an uninterrupted run's."""
    iterations = 4
    reference_dir = tmp_path / "reference"
    code, output = _attempt(reference_dir, jax_cache, iterations, num_seeds=3)
    assert code == 0, output[-3000:]
    assert sorted(p.name for p in reference_dir.glob("seed_*")) == ["seed_0", "seed_1", "seed_2"]
    workdir = tmp_path / "run"
    # The 5th logged answer falls between two seeds' appends of one iteration.
    for fault in ("initial_fit_epoch:30", "after_oracle_log:5", "checkpoint_rotated:2"):
        code, output = _attempt(workdir, jax_cache, iterations, fault=fault, num_seeds=3)
        assert code == -signal.SIGKILL, f"{fault} was not killed:\n{output[-3000:]}"
    code, output = _attempt(workdir, jax_cache, iterations, num_seeds=3)
    assert code == 0, output[-3000:]
    _assert_same_run(workdir, reference_dir, num_seeds=3)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_a_run_killed_at_random_moments_again_and_again_equals_the_uninterrupted_run(jax_cache, tmp_path, seed):
    """Killed until it finishes: each attempt a random named fault or a kill at a random time (since the process
    started, or since it last saved a checkpoint); 40 iterations leave room for at least 15 kills."""
    iterations = 40
    reference_dir = tmp_path / "reference"
    code, output = _attempt(reference_dir, jax_cache, iterations)
    assert code == 0, output[-3000:]
    rng = np.random.default_rng(seed)
    workdir, kills = tmp_path / "run", 0
    points = ["initial_fit_epoch", "mid_append", "after_oracle", "after_oracle_log", "checkpoint_written",
              "checkpoint_rotated"]
    for _ in range(100):
        choice = rng.integers(len(points) + 2)
        saved = workdir / runfolder.CHECKPOINT
        if choice == 0 and (saved.exists() or checkpoint.previous_path(saved).exists()):
            choice = len(points)  # past the initial fit: a timed kill instead
        if choice < len(points):
            fault, kill = f"{points[choice]}:{rng.integers(1, 3)}", None
        elif choice == len(points):
            fault, kill = None, _kill_after(rng.uniform(0.0, 3.0))
        else:
            fault, kill = None, _kill_while_iterating(workdir, rng.uniform(0.0, 0.5))
        code, output = _attempt(workdir, jax_cache, iterations, fault=fault, kill=kill)
        if code == 0:
            break
        assert code == -signal.SIGKILL, output[-3000:]
        kills += 1
    else:
        pytest.fail("the run did not finish in 100 attempts")
    print(f"seed {seed}: finished after {kills} kills")
    assert kills >= 15
    _assert_same_run(workdir, reference_dir)


# ------------------------------------------------------------------------------------------ in one process
class _Killed(BaseException):
    pass


def _kill_at(monkeypatch, name, count=1):
    """Makes `guard.fault_point(name)` raise on its `count`-th visit (an in-process stand-in for SIGKILL)."""
    visits = []

    def fault_point(point):
        if point == name:
            visits.append(point)
            if len(visits) == count:
                raise _Killed(name)

    monkeypatch.setattr(guard, "fault_point", fault_point)


def test_only_the_torn_line_of_an_oracle_answer_is_asked_again(tmp_path, monkeypatch):
    config = toy_config(iterations=1, budget=14, acquire_count=6)
    _kill_at(monkeypatch, "mid_append", 1)  # the first append: the 8 initial labels, the 8th line torn
    with pytest.raises(_Killed):
        driver_lib.run(config, tmp_path)
    assert len(checkpoint.read_jsonl(tmp_path / runfolder.ORACLE_LOG)) == 7
    monkeypatch.undo()
    asked = []
    original = oracle.SimulatedOracle.label

    def recording(self, indices, *display):
        asked.append(np.asarray(indices).tolist())
        return original(self, indices, *display)

    monkeypatch.setattr(oracle.SimulatedOracle, "label", recording)
    driver_lib.run(config, tmp_path)
    log = checkpoint.read_jsonl(tmp_path / runfolder.ORACLE_LOG)
    assert [len(a) for a in asked] == [1, 6]  # the torn line's sample, then iteration 1's acquisition
    assert asked[0] == [log[7]["index"]] and [e["iteration"] for e in log] == [0] * 8 + [1] * 6
    assert len({e["index"] for e in log}) == 14


def _answer_all(tmp_path, hidden) -> int:
    """A person answers every open FileOracle round; returns the number of labels given."""
    folders = sorted((tmp_path / "oracle").glob("round_*"))
    return sum(answer_round(folder, hidden) for folder in folders if not (folder / "answers.csv").exists())


def test_file_oracle_answers_logged_before_a_kill_are_not_asked_again(tmp_path, monkeypatch):
    """Killed after iteration 1's answers were logged, before its checkpoint: the resumed run reuses them, and
    the next acquisition opens a new round instead of reading the old round's answer file."""
    config = toy_config(iterations=3, budget=12, oracle="file")  # 8 initial + 2 in iterations 1 and 3
    with pytest.raises(oracle.LabelsPending):
        driver_lib.run(config, tmp_path)
    hidden = driver_lib.Driver(config, tmp_path).seeds[0].hidden_labels
    assert _answer_all(tmp_path, hidden) == 8
    with pytest.raises(oracle.LabelsPending):
        driver_lib.run(config, tmp_path)  # initial fit done; iteration 1 asks for 2 labels in round 1
    assert _answer_all(tmp_path, hidden) == 2
    _kill_at(monkeypatch, "after_oracle_log")
    with pytest.raises(_Killed):
        driver_lib.run(config, tmp_path)
    monkeypatch.undo()
    with pytest.raises(oracle.LabelsPending):
        driver_lib.run(config, tmp_path)  # iteration 1 reused its logged labels; iteration 3 asks in round 2
    assert sorted(p.name for p in (tmp_path / "oracle").iterdir()) == ["round_0000", "round_0001", "round_0002"]
    assert _answer_all(tmp_path, hidden) == 2
    assert driver_lib.run(config, tmp_path)["labels"] == 12
    log = checkpoint.read_jsonl(tmp_path / runfolder.ORACLE_LOG)
    assert len({e["index"] for e in log}) == len(log) == 12
