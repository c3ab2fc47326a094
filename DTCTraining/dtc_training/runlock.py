"""One training per run folder. `dtc train` holds an operating-system lock on OUT/.dtc-train.lock while it
runs, so that a second trainer in the same folder (a second `--resume`, or a panel reopened after a crash
while the orphaned trainer still runs) is refused before it loads data or writes anything, instead of two
processes overwriting each other's checkpoint. The system drops the lock when the process ends, however it
ends, so a killed run leaves no stale lock behind."""
from __future__ import annotations

import errno
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from .errors import InputError

LOCK_NAME = ".dtc-train.lock"

if os.name == "nt":
    import msvcrt

    def _try_lock(handle) -> bool:
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
else:
    import fcntl

    def _try_lock(handle) -> bool:
        # A POSIX record lock, not flock(): it belongs to this process alone, so DataLoader workers forked
        # from the trainer do not hold the folder after the trainer has died (and it works over NFS).
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        return True


def _owner(handle) -> str:
    try:
        handle.seek(0)
        return handle.read().strip() or "owner unknown"
    except OSError:  # Windows refuses to read a region another process has locked
        return "owner unknown"


@contextmanager
def hold_run_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold `folder`'s training lock for the duration of the block; an InputError naming the folder and
    the owner if another process holds it."""
    with open(Path(folder) / LOCK_NAME, "a+", encoding="utf-8") as handle:
        if not _try_lock(handle):
            raise InputError(f"{folder}: another training is running in this folder ({_owner(handle)}); "
                             "stop it first, or train into another folder")
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield  # closing the file releases the lock


def running_owner(folder: str | os.PathLike) -> Optional[str]:
    """Who holds `folder`'s training lock ("process PID on HOST"), or None when no training runs there."""
    path = Path(folder) / LOCK_NAME
    if not path.is_file():
        return None
    try:
        handle = open(path, "a+", encoding="utf-8")
    except OSError as e:  # cannot tell: better taken for running than offered to a second trainer
        return f"unknown: {e.strerror or e}"
    with handle:
        if _try_lock(handle):
            return None  # free: released again as the file closes
        return _owner(handle)
