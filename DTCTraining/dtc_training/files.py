"""Crash-safe file writing: write to a temporary file in the target folder, fsync, then rename over
the target, so a kill or a full disk never leaves a half-written checkpoint, model, datalist or image."""
from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import InputError

DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # no space, or over the user's quota


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # Created exclusively under a random name, as mkstemp does, but with mode 0o666 so that the umask, not
    # mkstemp's owner-only mode, decides who may read the model or label (colleagues, Slicer under another
    # account).
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in DISK_FULL:  # reported against the target (not the temporary), which is as it was
            raise OSError(e.errno, os.strerror(e.errno), str(path)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_named(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """For writers that take a file name (SimpleITK) and formats that write a data file beside the named
    header (.nhdr, .mhd): `write` fills a temporary sibling folder, whose files are synced and then moved
    into place, the named file last so that it never points at data not yet there."""
    path = Path(path)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        write(staging / path.name)
        files = sorted(staging.iterdir(), key=lambda f: f.name == path.name)
        for f in files:
            with open(f, "rb+") as handle:
                os.fsync(handle.fileno())
        for f in files:
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch  # here, so that modules writing only JSON and images do not load torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_json_save(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: json.dump(obj, f, indent=2), mode="w")


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and prove it is writable; raise an InputError naming it otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"{path}: output folder is not writable ({e.strerror or e})") from None
    return path


def check_output(path: Path) -> None:
    """A file about to be written: not a folder, its folder created and writable (before any work)."""
    if path.is_dir():
        raise InputError(f"{path}: output is a folder, a file name is needed")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{path.parent}: cannot create the output folder ({e.strerror or e})") from None
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"{path.parent}: output folder is not writable")
