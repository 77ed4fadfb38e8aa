"""Run-directory I/O: checksummed checkpoints with a previous copy, torn JSON lines, the workdir lock and checks."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from deepbass_jax import data, driver as driver_lib
from deepbass_jax.workdir import checkpoint, guard, runfolder
from tests.helpers import toy_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def _state(iteration):
    return {"iteration": iteration, "weights": np.arange(6, dtype=np.float32) * iteration, "nested": {"step": 3}}


def _iteration(path):
    return int(checkpoint.load(path)["iteration"])


# ------------------------------------------------------------------------------------------ checkpoints
def test_save_load_round_trip_and_the_previous_checkpoint_is_kept(tmp_path):
    path = tmp_path / "checkpoint.msgpack"
    checkpoint.save(path, _state(1))
    assert not checkpoint.previous_path(path).exists()
    checkpoint.save(path, _state(2))
    checkpoint.save(path, _state(3))
    assert checkpoint.previous_path(path).name == "checkpoint.prev.msgpack"
    assert (_iteration(path), _iteration(checkpoint.previous_path(path))) == (3, 2)
    np.testing.assert_array_equal(checkpoint.load(path)["weights"], _state(3)["weights"])
    assert checkpoint.load(path)["nested"] == {"step": 3}
    assert path.read_bytes().startswith(checkpoint.MAGIC)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "is torn"),  # cut in the payload
        (lambda b: b[:20], "shorter than its header"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "SHA-256 does not match"),  # one flipped bit
        (lambda b: b"", "not a checkpoint"),
        (lambda b: b"\x00" * len(b), "not a checkpoint"),  # blocks never written (power loss)
    ],
)
def test_load_refuses_torn_and_corrupted_files(tmp_path, damage, message):
    path = tmp_path / "checkpoint.msgpack"
    checkpoint.save(path, _state(1))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.load(path)


def test_checkpoints_from_before_checksums_still_load(tmp_path):
    import flax.serialization

    path = tmp_path / "checkpoint.msgpack"
    path.write_bytes(flax.serialization.msgpack_serialize(_state(4)))
    assert _iteration(path) == 4


def test_load_newest_falls_back_to_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.msgpack"
    assert checkpoint.load_newest(path) is None  # a fresh run
    checkpoint.save(path, _state(1))
    checkpoint.save(path, _state(2))
    newest = checkpoint.load_newest(path)
    assert (newest.path, newest.state["iteration"], newest.problems) == (path, 2, ())

    path.write_bytes(path.read_bytes()[:-7])  # torn newest
    restored = checkpoint.load_newest(path)
    assert restored.path == checkpoint.previous_path(path) and restored.state["iteration"] == 1
    assert "checkpoint.msgpack is torn" in restored.problems[0]

    path.unlink()  # killed between the two renames of a save: only the previous one has its name
    restored = checkpoint.load_newest(path)
    assert restored.state["iteration"] == 1 and "is missing" in restored.problems[0]


def test_load_newest_names_both_files_when_neither_is_usable(tmp_path):
    path = tmp_path / "checkpoint.msgpack"
    checkpoint.save(path, _state(1))
    checkpoint.save(path, _state(2))
    for candidate in (path, checkpoint.previous_path(path)):
        candidate.write_bytes(candidate.read_bytes()[:-1])
    with pytest.raises(checkpoint.CheckpointError) as error:
        checkpoint.load_newest(path)
    text = str(error.value)
    assert str(path) in text and str(checkpoint.previous_path(path)) in text and "oracle log" in text
    checkpoint.previous_path(path).unlink()  # the newest bad, no previous: still refused, not a silent restart
    with pytest.raises(checkpoint.CheckpointError, match="prev.msgpack is missing"):
        checkpoint.load_newest(path)


def test_a_failed_save_leaves_both_checkpoints_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.msgpack"
    checkpoint.save(path, _state(1))
    checkpoint.save(path, _state(2))

    def interrupted(name):
        if name == "checkpoint_rotated":
            raise KeyboardInterrupt

    monkeypatch.setattr(guard, "fault_point", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, _state(3))
    assert not path.exists() and _iteration(checkpoint.previous_path(path)) == 2  # one good checkpoint remains
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.undo()
    checkpoint.save(path, _state(3))  # no newest to rotate: the good previous one stays
    assert (_iteration(path), _iteration(checkpoint.previous_path(path))) == (3, 2)


def test_set_aside_keeps_a_bad_checkpoint_out_of_the_rotation(tmp_path):
    path = tmp_path / "checkpoint.msgpack"
    checkpoint.save(path, _state(1))
    checkpoint.save(path, _state(2))
    path.write_bytes(b"garbage")
    bad = checkpoint.set_aside(path)
    assert bad.name == "checkpoint.msgpack.bad" and bad.read_bytes() == b"garbage" and not path.exists()
    checkpoint.save(path, _state(3))
    assert (_iteration(path), _iteration(checkpoint.previous_path(path))) == (3, 1)


def test_a_non_atomic_write_would_be_caught(tmp_path):
    """The checksum is what turns a half-written file into an error instead of a wrong resume."""
    path = tmp_path / "checkpoint.msgpack"
    checkpoint.save(path, _state(1))
    full = path.read_bytes()
    checkpoint.save(path, _state(2))
    path.write_bytes(path.read_bytes()[: len(full) - 5])  # what a kill during an in-place write leaves
    assert checkpoint.load_newest(path).state["iteration"] == 1


def test_atomic_write_reports_a_full_disk_and_keeps_the_old_content(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    checkpoint.write_json(path, {"old": 1})

    def full(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="no space left to write .*summary.json.*previous version is intact"):
        checkpoint.write_json(path, {"new": 2})
    monkeypatch.undo()
    assert '"old": 1' in path.read_text()
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_remove_temporaries_deletes_what_killed_writers_left(tmp_path):
    (tmp_path / ".checkpoint.msgpack.abc123.tmp").write_bytes(b"half")
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    removed = checkpoint.remove_temporaries(tmp_path)
    assert [p.name for p in removed] == [".checkpoint.msgpack.abc123.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


# ------------------------------------------------------------------------------------------ JSON lines
@pytest.mark.parametrize(
    "tail",
    [b'{"iteration": 3, "in', b'{"iteration": 3}', b"\x00\x00\x00\x00", b'{"iteration": 3, "in\x00\x00\n'],
    ids=["half a line", "no newline yet", "zeros (power loss)", "garbled last line"],
)
def test_a_torn_last_line_is_dropped_and_repaired(tmp_path, tail):
    path = tmp_path / "oracle_log.jsonl"
    checkpoint.append_jsonl(path, [{"iteration": 1}, {"iteration": 2}])
    intact = path.read_bytes()
    with open(path, "ab") as handle:
        handle.write(tail)
    assert checkpoint.read_jsonl(path) == [{"iteration": 1}, {"iteration": 2}]
    assert checkpoint.repair_jsonl(path) == tail
    assert path.read_bytes() == intact
    assert checkpoint.repair_jsonl(path) is None
    checkpoint.append_jsonl(path, [{"iteration": 3}])  # continues on a line boundary
    assert checkpoint.read_jsonl(path) == [{"iteration": 1}, {"iteration": 2}, {"iteration": 3}]


def test_a_damaged_line_before_the_last_is_an_error_not_a_torn_append(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"iteration": 1}\n{"itera\n{"iteration": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2 is damaged .* by hand"):
        checkpoint.read_jsonl(path)
    with pytest.raises(ValueError, match="line 2 is damaged"):
        checkpoint.repair_jsonl(path)


def test_append_killed_in_the_middle_leaves_a_torn_line_that_resume_drops(tmp_path, monkeypatch):
    path = tmp_path / "oracle_log.jsonl"
    checkpoint.append_jsonl(path, [{"index": 1, "iteration": 0, "label": 0}])

    def killed(name):
        if name == "mid_append":
            raise KeyboardInterrupt

    monkeypatch.setattr(guard, "fault_point", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.append_jsonl(path, [{"index": 7, "iteration": 1, "label": 1}, {"index": 9, "iteration": 1, "label": 0}])
    assert not path.read_bytes().endswith(b"\n")  # the kill tore the last line; the lines before it are whole
    assert checkpoint.read_jsonl(path) == [{"index": 1, "iteration": 0, "label": 0},
                                           {"index": 7, "iteration": 1, "label": 1}]


# ------------------------------------------------------------------------------------------ the lock
def test_a_second_lock_on_the_same_workdir_is_refused_until_released(tmp_path):
    first = guard.Lock(tmp_path)
    with pytest.raises(guard.WorkdirBusy, match=rf"{tmp_path} is in use by another run \(process {os.getpid()}"):
        guard.Lock(tmp_path)
    first.release()
    first.release()  # idempotent
    guard.Lock(tmp_path).release()


_HOLD = (
    "import sys, time; from deepbass_jax.workdir import guard; lock = guard.Lock(sys.argv[1]); "
    "print('locked', flush=True); time.sleep(120)"
)


def _hold_lock(workdir):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(workdir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_process_on_the_workdir_refuses_and_a_killed_holder_frees_it(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = _hold_lock(workdir)
    try:
        with pytest.raises(guard.WorkdirBusy, match=rf"process {holder.pid}\b.*kill {holder.pid}"):
            guard.Lock(workdir)
        command = [sys.executable, "-m", "experiments.main", "--config=experiments/configs/yinyang.py:initial",
                   f"--workdir={workdir}"]
        refused = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1, refused.stderr[-2000:]
        assert f"error: {workdir} is in use by another run (process {holder.pid}" in refused.stderr
        assert not (workdir / runfolder.CONFIG).exists()  # it wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    started = time.monotonic()
    guard.Lock(workdir).release()  # the kernel dropped the dead holder's lock: resumable at once
    assert time.monotonic() - started < 1


# ------------------------------------------------------------------------------------------ workdir checks
@pytest.fixture
def no_data_loading(monkeypatch):
    """Fails the test if the driver gets as far as loading data: the checks must come before any work."""
    monkeypatch.setattr(data, "load", lambda *a, **k: pytest.fail("data was loaded before the workdir check"))


def _unwritable_directory(tmp_path) -> pathlib.Path:
    """A directory this process cannot create files in: read-only for a normal user; root ignores permissions,
    so for root (as in CI containers) /proc/self, where nobody can create files."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        return folder
    (folder / "probe").unlink()
    folder.chmod(0o755)
    if not pathlib.Path("/proc/self").is_dir():
        pytest.skip("running as root without /proc: no directory is unwritable")
    return pathlib.Path("/proc/self")


def test_an_unwritable_workdir_fails_before_any_work(tmp_path, no_data_loading):
    folder = _unwritable_directory(tmp_path)
    try:
        with pytest.raises(guard.WorkdirError, match=rf"the workdir {folder} is not writable .*choose another"):
            driver_lib.Driver(toy_config("initial", num_per_class=20, quick=False), folder)
    finally:
        folder.chmod(0o755) if folder.is_relative_to(tmp_path) else None


def test_a_workdir_below_a_file_fails_before_any_work(tmp_path, no_data_loading):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(guard.WorkdirError, match=rf"cannot create the workdir {tmp_path / 'file' / 'run'}"):
        driver_lib.Driver(toy_config("initial", num_per_class=20, quick=False), tmp_path / "file" / "run")


def test_a_full_disk_fails_before_any_work(tmp_path, monkeypatch, no_data_loading):
    monkeypatch.setattr(guard.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 3 * 2**20})())
    with pytest.raises(guard.WorkdirError, match=rf"{tmp_path} has 3.0 MiB free; a run needs at least 50 MiB"):
        driver_lib.Driver(toy_config("initial", num_per_class=20, quick=False), tmp_path)
    monkeypatch.setattr(os, "write", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(guard.WorkdirError, match=rf"the disk of the workdir {tmp_path} is full"):
        guard.check_writable(tmp_path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir() if "probe" in p.name] == []


def test_a_failed_driver_set_up_releases_the_lock(tmp_path):
    unlabeled = data.Dataset("unlabeled", np.zeros((10, 2), np.float32), None, None, None, 2)
    with pytest.raises(ValueError, match="has no labels"):
        driver_lib.Driver(toy_config("initial", num_per_class=20, quick=False), tmp_path,
                          dataset=unlabeled)  # fails while holding the lock
    guard.Lock(tmp_path).release()  # not held any more by the failed driver
