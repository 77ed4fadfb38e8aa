"""experiments.main as a person meets it: one line per user error, the traceback on --debug, Ctrl-C."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np

from deepbass_jax.workdir import guard, runfolder

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _main(*args, **popen):
    command = [sys.executable, "-m", "experiments.main", *args]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"}, **popen)


def _one_based_file(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, x=np.zeros((30, 2), np.float32), y=np.arange(30) % 3 + 1)
    return ["--config=experiments/configs/yinyang.py", "--config.data.name=npz", f"--config.data.path={path}",
            f"--workdir={tmp_path / 'run'}"]


def test_a_user_error_prints_one_clean_line_and_the_traceback_only_on_debug(tmp_path):
    process = _main(*_one_based_file(tmp_path))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "labels run 1..3 but class(es) [0] never occur" in last
    assert not (tmp_path / "run").exists()  # nothing pinned, no lock: the corrected command may use it
    process = _main(*_one_based_file(tmp_path), "--debug")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1 and "Traceback" in stderr and "DataError: " in stderr


def _heed_ctrl_c():
    """In the child before it starts: Ctrl-C's default action, which Python turns into KeyboardInterrupt. A shell
    without job control starts background commands ignoring SIGINT and children inherit that, so a suite run
    with `pytest &` would otherwise send a signal nobody hears."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_says_how_to_resume_and_exits_130(tmp_path):
    workdir = tmp_path / "run"
    process = _main("--config=experiments/configs/yinyang.py", "--config.iterations=100000",
                    "--config.initial_patience=0", "--config.initial_epochs=20", f"--workdir={workdir}",
                    preexec_fn=_heed_ctrl_c)
    deadline = time.monotonic() + 120
    while not (workdir / runfolder.CHECKPOINT).exists():  # interrupt it among the iterations
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith(
        "Interrupted: run the same command again to resume from the checkpoint after ")
    guard.Lock(workdir).release()  # the lock was let go: the same command can resume at once
