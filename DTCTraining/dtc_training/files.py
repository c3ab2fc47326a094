"""Crash-safe, verified file writing: write to a temporary name in the target folder, fsync, check what
was written (not empty; images read back, see volumes.write_image), then rename over the target, so a
kill, a full disk or a writer that fails without saying so never leaves an empty or half-written
checkpoint, model, datalist or image under its final name. Also the checks every command makes of its
outputs before any work (`check_outputs`)."""
from __future__ import annotations

import errno
import json
import math
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from .errors import InputError

DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # no space, or over the user's quota


class WriteError(OSError):
    """A file that could not be written whole: the writer failed, or what it wrote did not check out. The file
    there before, if any, is intact; the CLI prints one line naming the file and exits with EXIT_ERROR."""

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def _failed(path: Path, error: BaseException) -> WriteError:
    """`error` reported against the target (not the temporary name), which is as it was."""
    if isinstance(error, OSError) and error.errno is not None:
        return WriteError(error.errno, os.strerror(error.errno), str(path))
    reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return WriteError(errno.EIO, reason, str(path))


class _RecordingFile:
    """A file object that remembers the first OSError its writes met: some writers catch it and fail with a
    message of their own (torch.save's zip writer turns a full disk into "unexpected pos 704 vs 598")."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """`write(f)` fills a temporary file, which becomes `path` once synced and found as long as what was
    written (never empty); any failure is a WriteError naming `path`, whose old content is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    recording = None
    # Created exclusively under a random name, as mkstemp does, but with mode 0o666 so that the umask, not
    # mkstemp's owner-only mode, decides who may read the model or label (colleagues, Slicer under another
    # account).
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            recording = _RecordingFile(f)
            write(recording)
            f.flush()
            os.fsync(f.fileno())
            written, size = os.lseek(f.fileno(), 0, os.SEEK_CUR), os.fstat(f.fileno()).st_size
        if size == 0 or size != written:
            raise WriteError(errno.EIO, f"{size} of {written} bytes reached the disk", str(path))
        os.replace(tmp, path)
    except WriteError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as e:
        tmp.unlink(missing_ok=True)
        cause = recording.error if recording is not None and recording.error is not None else e
        if isinstance(cause, OSError) or cause is not e:
            raise _failed(path, cause) from e
        raise  # not a write failure: the writer's own error (a bug, an object it cannot save)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_named(path: str | os.PathLike, write: Callable[[Path], None],
                       verify: Optional[Callable[[Path], None]] = None) -> Path:
    """For writers that take a file name (SimpleITK) and formats that write a data file beside the named
    header (.nhdr, .mhd): `write` fills a temporary sibling folder, whose files are synced, found not empty
    and checked by `verify` (given the staged named file; it raises WriteError), then moved into place, the
    named file last so that it never points at data not yet there."""
    path = Path(path)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        try:
            write(staging / path.name)
            files = sorted(staging.iterdir(), key=lambda f: f.name == path.name)
            for f in files:
                with open(f, "rb+") as handle:
                    os.fsync(handle.fileno())
            if not (staging / path.name).is_file() or any(f.stat().st_size == 0 for f in files):
                raise WriteError(errno.EIO, "the writer left it empty or did not write it", str(path))
            if verify is not None:
                verify(staging / path.name)
        except WriteError as e:
            raise WriteError(e.errno, e.strerror, str(path)) from None
        except OSError as e:
            raise _failed(path, e) from e
        for f in files:
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch  # here, so that modules writing only JSON and images do not load torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def strict_json(obj: Any, **options) -> str:
    """JSON as its standard defines it, which every reader accepts: a NaN or infinite float (which Python's
    json writes as a bare NaN or Infinity) is written as the string "nan", "inf" or "-inf"."""
    try:
        return json.dumps(obj, allow_nan=False, **options)
    except ValueError:
        return json.dumps(_finite_or_text(obj), allow_nan=False, **options)


def _finite_or_text(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf"; float() reads each back
    if isinstance(value, dict):
        return {k: _finite_or_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_text(v) for v in value]
    return value


def atomic_json_save(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: f.write(strict_json(obj, indent=2)), mode="w")


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and prove it is writable; raise an InputError naming it otherwise."""
    path = Path(path)
    _refuse_file_in_the_way(path)
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
    _refuse_file_in_the_way(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{path.parent}: cannot create the output folder ({e.strerror or e})") from None
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"{path.parent}: output folder is not writable")


def _refuse_file_in_the_way(folder: Path) -> None:
    """A folder to write into that is a file, or lies under one: said plainly (mkdir would say "File exists")."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise InputError(f"{candidate}: is a file, not a folder; choose another output folder")
            return


def check_outputs(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike] = ()) -> None:
    """The output guard, called by every command (and the Slicer module) before any work: each output can be
    written (`check_output`); none is an input of the same call, which it would destroy, whatever the path
    that names it (another spelling, a symbolic or hard link, another case of letters where the file system
    ignores case: the same file is the same device and inode); no two outputs are one file. An earlier
    output, not an input now, may be replaced. Raises an InputError naming both paths."""
    outputs = [Path(p) for p in outputs]
    read = {}
    for source in map(Path, inputs):
        read.setdefault(_file_id(source), source)
    read.pop(None, None)  # inputs that do not exist are refused by the readers, naming them
    written: dict = {}
    for out in outputs:
        check_output(out)
        same = read.get(_file_id(out))
        if same is not None:
            raise InputError(f"{out}: is the input {same} (the same file); writing it would destroy that "
                             "input, choose another output name")
        key = _file_id(out) or (_file_id(out.parent), os.path.normcase(out.name))
        if key in written:
            raise InputError(f"{out}: is also the output {written[key]} of this command; give each output "
                             "its own name")
        written[key] = out


def _file_id(path: Path) -> Optional[tuple]:
    """Device and inode of the file `path` names, following links; None if there is none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino
