"""A run's claim on its files: one process at a time (a lock), and no new run over an old one's history and
checkpoints unless asked.

``<prefix>.lock`` is held with ``flock`` while a process trains the run (released when it ends, or dies: a
``kill -9`` frees it) and holds ``pid host start-time`` of the holder, so a second run there stops with an error
naming that process. A new run (not ``resume``, from epoch 0) refuses to start where ``<prefix>_hist.json`` or a
checkpoint of the same name exists, unless ``overwrite`` (``--overwrite``), which removes the old checkpoints
so a later ``--resume`` cannot pick one of them up. On several hosts process 0 holds the lock.

Example:
    >>> lock = RunLock(str(getfixture("tmp_path") / "r50"))
    >>> with lock:
    ...     RunLock(lock.prefix).acquire()
    Traceback (most recent call last):
    ...
    keras_insightface.errors.DataError: ...r50.lock: the run r50 is in use by process ... since ...; wait for it \
to end or stop it, or give this run another save_path
"""

import fcntl
import os
import shutil
import socket
import time

from keras_insightface.errors import DataError
from keras_insightface.training.checkpoint import checkpoint_dirs


class RunLock:
    """The exclusive lock of the run ``prefix``; re-entrant for the holder (``acquire``/``release`` pair up)."""

    def __init__(self, prefix):
        self.prefix, self.path = prefix, prefix + ".lock"
        self._fd, self._depth = None, 0

    def acquire(self):
        if self._depth == 0:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise DataError(f"{self.path}: cannot create the run's lock file ({error.strerror or error}); the run "
                                "folder must be writable") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").split()
                os.close(fd)
                pid, host, since = (holder + ["?", "?", "?"])[:3]
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(since))) if since != "?" else "?"
                raise DataError(
                    f"{self.path}: the run {os.path.basename(self.prefix)} is in use by process {pid} on {host} since "
                    f"{when}; wait for it to end or stop it, or give this run another save_path"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {time.time():.0f}\n".encode(), 0)
            self._fd = fd
        self._depth += 1
        return self

    def release(self):
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def prefix_of(save_path, checkpoint_dir):
    """``<dir>/<name>`` of a run: the folder of ``save_path`` (else ``checkpoint_dir``) and its stem."""
    directory, filename = os.path.split(save_path)
    return os.path.join(directory or checkpoint_dir, os.path.splitext(filename)[0])


def _state_dirs(prefix):
    """Every checkpoint folder of the run ``prefix``: the kept ones and a write that was cut short."""
    return [*checkpoint_dirs(prefix + "_state"), *[path for path in [prefix + "_state.tmp"] if os.path.isdir(path)]]


def check_new_run(prefix, overwrite, remove=True):
    """Refuse to start a new run where the run ``prefix`` left a history or checkpoints, unless ``overwrite``
    (then, with ``remove``, the old checkpoints are removed: every host checks, process 0 removes)."""
    found = [path for path in [prefix + "_hist.json", *_state_dirs(prefix)] if os.path.exists(path)]
    if not found:
        return
    if not overwrite:
        raise DataError(
            f"{found[0]}: a run named {os.path.basename(prefix)} already trained here; continue it with --resume "
            "(resume=True), start it over with --overwrite (overwrite=True), or give this run another save_path"
        )
    if not remove:
        return
    for path in _state_dirs(prefix):
        shutil.rmtree(path, ignore_errors=True)
    print(f">>>> overwrite: starting {os.path.basename(prefix)} over (its old checkpoints removed)")
