"""A full disk for real, for the reliability tests (here and in Testing/Python): commands run in a private
mount namespace (`unshare --mount`, as root or in a user namespace) in which a folder is a small tmpfs filled
to a chosen number of free bytes, so that every writer meets the kernel's ENOSPC exactly as on a full disk.
Nothing of it is seen outside that namespace, and it ends with the commands; where namespaces or tmpfs
mounts are not allowed, `available()` is False and the tests that need it are skipped (the monkeypatched
writers in test_reliability.py still run)."""
from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

MOUNT_FAILED = 97


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    files: dict = field(default_factory=dict)  # name -> md5 of every file on the full disk after the command


def _unshare() -> list[str]:
    return ["unshare", "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])


@functools.lru_cache(maxsize=None)
def available() -> bool:
    if os.name != "posix" or not shutil.which("unshare"):
        return False
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"dtc-full-disk-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        run = subprocess.run([*_unshare(), "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(probe))}"],
                             capture_output=True, timeout=60)
        return run.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        probe.rmdir()


def disk(work: Path) -> Path:
    """The folder that is the full disk while `run_on_full_disk(work, ...)` runs (an empty folder before)."""
    return work / "disk"


def run_on_full_disk(work: Path, commands: list[list], free: int = 0, earlier: dict | None = None,
                     size_kb: int = 512) -> list[Outcome]:
    """Run `commands` one after the other with `disk(work)` a tmpfs holding the `earlier` files (name ->
    bytes) and `free` bytes left (0: full); each command's exit code, output and the files then on the disk."""
    full, seed, out = disk(work), work / "seed", work / "outcomes"
    for folder in (full, seed, out):
        folder.mkdir(parents=True, exist_ok=True)
    for name, data in (earlier or {}).items():
        (seed / name).write_bytes(data)
    q = shlex.quote
    lines = [f"mount -t tmpfs -o size={size_kb}k tmpfs {q(str(full))} || exit {MOUNT_FAILED}",
             f"cp -a {q(str(seed))}/. {q(str(full))}/",
             f"left=$(( $(stat -f -c %a {q(str(full))}) * $(stat -f -c %S {q(str(full))}) - {free} ))",
             f"head -c $left /dev/zero > {q(str(full / '.fill'))} 2>/dev/null"]
    for i, command in enumerate(commands):
        argv = " ".join(q(str(a)) for a in command)
        result = q(str(out / str(i)))
        lines += [f"{argv} > {result}.out 2> {result}.err; echo $? > {result}.rc",
                  f"(cd {q(str(full))} && find . -type f ! -name .fill -exec md5sum {{}} +) > {result}.files"]
    run = subprocess.run([*_unshare(), "sh", "-c", "\n".join(lines)], capture_output=True, text=True, timeout=900)
    assert run.returncode != MOUNT_FAILED, run.stderr
    outcomes = []
    for i in range(len(commands)):
        files = {}
        for line in (out / f"{i}.files").read_text().splitlines():
            digest, name = line.split(maxsplit=1)
            files[name.removeprefix("./")] = digest
        outcomes.append(Outcome(int((out / f"{i}.rc").read_text()), (out / f"{i}.out").read_text(),
                                (out / f"{i}.err").read_text(), files))
    return outcomes
