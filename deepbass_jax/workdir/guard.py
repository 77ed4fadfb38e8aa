"""The run directory as a resource: one run at a time (a lock), checked before any work, and named fault points.

`Lock` holds an exclusive `fcntl.flock` on `<workdir>/.lock` for the life of a run, so a second process on the
same workdir stops with a message naming the holder's PID instead of interleaving writes with it. The kernel
drops the lock when its holder dies, however it dies, so a run killed with SIGKILL can be resumed at once.

`check_writable` proves, before data is loaded or a model fitted, that the workdir can take a file (create,
write, fsync, remove a probe) and has room for the run's files.

`fault_point(name)` is where the kill tests (tests/fault_test.py) stop a real run: with the environment variable
`DEEPBASS_FAULT_AT=NAME:N` the process SIGKILLs itself the N-th time it reaches point NAME. Unset (always, outside
tests) it costs one dictionary lookup. The points: `initial_fit_epoch` (after each epoch of the initial fit),
`iteration` (the start of each iteration, on every process), `after_oracle` (an answer arrived, not yet logged),
`after_oracle_log` (answers logged, not yet checkpointed),
`mid_append` (inside an append to a JSON-lines file: tears its last line), `checkpoint_written` (the new
checkpoint is complete under a temp name) and `checkpoint_rotated` (the old one renamed to previous, the new one
not yet renamed into place).
"""

from __future__ import annotations

import errno
import fcntl
import os
import pathlib
import shutil
import signal

LOCK = ".lock"
MIN_FREE_BYTES = 50 * 2**20  # checkpoints (two kept), logs and plots of the paper's runs stay far below this
FAULT_ENV = "DEEPBASS_FAULT_AT"


class WorkdirError(RuntimeError):
    """The workdir cannot hold this run: not writable, too little free space, or in use by another process."""


class WorkdirBusy(WorkdirError):
    """Another live process holds the workdir's lock."""


class Lock:
    """An exclusive lock on `workdir` (acquired on construction) until `release()` or the process ends."""

    def __init__(self, workdir):
        self.path = pathlib.Path(workdir) / LOCK
        self._handle = open(self.path, "a+")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            self._handle.seek(0)
            holder = self._handle.read().strip() or "unknown"
            self._handle.close()
            self._handle = None
            if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise WorkdirError(f"cannot lock {self.path}: {error}") from error
            raise WorkdirBusy(
                f"{self.path.parent} is in use by another run (process {holder}, lock {self.path}). Wait for it "
                f"to finish, or stop it (kill {holder}) and run the same command again to resume; or choose "
                "another --workdir."
            ) from None
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"{os.getpid()}\n")
        self._handle.flush()

    @property
    def held(self) -> bool:
        return self._handle is not None

    def release(self, remove: bool = False) -> None:
        """Unlocks (idempotent). The PID stays in the file, where it names the holder only while the lock is held;
        `remove` deletes the file first (a refused run leaves nothing behind)."""
        if self._handle is not None:
            if remove:
                self.path.unlink(missing_ok=True)  # while still held: no other process can own this file now
            self._handle.close()  # closing the only descriptor of the open file releases the flock
            self._handle = None


def check_writable(workdir, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Creates `workdir` if needed and fails early, naming it, if it cannot take files or lacks free space."""
    workdir = pathlib.Path(workdir)
    advice = "choose another --workdir, or fix its permissions"
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WorkdirError(f"cannot create the workdir {workdir}: {error.strerror or error}; {advice}.") from error
    probe = workdir / f".write_probe.{os.getpid()}"
    try:
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(descriptor, b"probe\n")
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        if probe.exists():
            probe.unlink()
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise WorkdirError(f"the disk of the workdir {workdir} is full; free space and run again.") from error
        raise WorkdirError(f"the workdir {workdir} is not writable ({error.strerror or error}); {advice}.") from error
    free = shutil.disk_usage(workdir).free
    if free < min_free_bytes:
        raise WorkdirError(
            f"the disk of the workdir {workdir} has {free / 2**20:.1f} MiB free; a run needs at least "
            f"{min_free_bytes / 2**20:.0f} MiB for its checkpoints and logs. Free space or choose another --workdir."
        )


_reached: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Kills this process with SIGKILL here when `DEEPBASS_FAULT_AT` is `name:N` and this is the N-th visit."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


class _NoLock:
    """What a process other than 0 holds instead of the workdir lock: it never touches the workdir."""

    held = True

    def release(self, remove: bool = False) -> None:
        del remove


def claim(workdir, leader: bool):
    """Process 0 checks that `workdir` can take the run's files (`check_writable`, before any work) and locks it;
    the others hold a lock that is no lock."""
    if not leader:
        return _NoLock()
    check_writable(workdir)
    return Lock(workdir)


def release_refused(lock, workdir, created: bool) -> None:
    """After a refused setting or input: the workdir stays as reusable as it was (a folder the run made, still
    empty, goes)."""
    lock.release(remove=True)
    workdir = pathlib.Path(workdir)
    if created and workdir.exists() and not any(workdir.iterdir()):
        workdir.rmdir()
