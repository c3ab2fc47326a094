"""Crash-safe file writing: write to a temporary file in the target folder, fsync, then rename over
the target, so a kill or a full disk never leaves a half-written checkpoint, model or datalist."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import InputError


def _new_file_mode() -> int:
    mask = os.umask(0)  # reading the umask means setting it; done once, at import, before any threads
    os.umask(mask)
    return 0o666 & ~mask


# mkstemp creates its file readable by the owner alone; the renamed result gets the permissions of any
# newly created file instead, so that colleagues (or Slicer under another account) can read models and labels.
NEW_FILE_MODE = _new_file_mode()


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, NEW_FILE_MODE)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
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
