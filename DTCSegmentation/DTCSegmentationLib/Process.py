"""Child processes for training and inference, without Qt.

`ChildProcess` starts a command with `subprocess.Popen` in its own process group, reads its merged
stdout/stderr on a daemon thread into a queue, and can end the whole process tree (the Slicer launcher
`PythonSlicer` starts the real Python as a child, so killing only the launcher would leave it running).
The widget drains `readLines()` from a QTimer; headless code calls `wait()`. A child started with
`acceptsInput` also takes lines on its standard input (`send`): the inference server's requests. Tests inject
any object that follows `ProcessProtocol`.

`parseEvent` turns the trainer's JSON progress lines into dicts and ignores everything else;
`explainFailure` turns an exit code and the log tail into a sentence a user can act on.
"""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Iterable, Optional, Protocol, Sequence

EVENTS = {"start", "progress", "validation", "checkpoint", "stopped", "done", "diverged", "error",  # dtc train
          "ready", "received", "answer", "idle"}  # dtc serve

# Exit codes of `dtc` (dtc_training.cli), repeated here so this file imports nothing heavy.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 3
EXIT_DIVERGED = 4

EOF_GRACE_S = 5.0  # how long output may still arrive after the child exited


class ProcessProtocol(Protocol):
    pid: int

    def poll(self) -> Optional[int]: ...

    def readLines(self) -> list[str]: ...

    def wait(self, timeout: Optional[float] = None) -> Optional[int]: ...

    def killTree(self) -> None: ...


class InputProcessProtocol(ProcessProtocol, Protocol):
    def send(self, line: str) -> None: ...


class ChildProcess:
    """A started child process whose output lines are collected by a reader thread."""

    def __init__(self, args: Sequence[str], env: Optional[dict] = None, cwd: Optional[str] = None,
                 acceptsInput: bool = False):
        kwargs = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # own process group: the tree can be signalled at once
        self.args = list(args)
        self._proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if acceptsInput else subprocess.DEVNULL,
            env=env, cwd=cwd, text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        self.pid = self._proc.pid
        self._queue: "queue.Queue[str]" = queue.Queue()
        self._eof = threading.Event()
        self._exitedAt: Optional[float] = None
        self._thread = threading.Thread(target=self._read, name=f"dtc-child-{self.pid}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self._proc.stdout:
                self._queue.put(line.rstrip("\r\n"))
        except (OSError, ValueError):
            pass
        finally:
            self._eof.set()

    def poll(self) -> Optional[int]:
        """The exit code once the process has ended and its output has been read, else None. A grandchild
        that outlives it can hold the pipe open; after EOF_GRACE_S the code is returned anyway."""
        code = self._proc.poll()
        if code is None:
            return None
        if self._exitedAt is None:
            self._exitedAt = time.monotonic()
        if not self._eof.is_set() and time.monotonic() - self._exitedAt < EOF_GRACE_S:
            return None
        return code

    def readLines(self) -> list[str]:
        lines = []
        while True:
            try:
                lines.append(self._queue.get_nowait())
            except queue.Empty:
                return lines

    def send(self, line: str) -> None:
        """Write one line to the child's standard input; OSError once the child has gone."""
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._eof.wait(EOF_GRACE_S)
        return self._proc.returncode

    def killTree(self) -> None:
        """End the process and everything it started (psutil, where installed, while it runs; its process
        group on POSIX; taskkill /T on Windows). Also called after a normal exit, to reap workers the child
        may have left behind: by then its pid may belong to an unrelated process, so only the group, which
        outlives its leader, is signalled."""
        if self._proc.poll() is None:
            try:
                import psutil  # where installed (Slicer 5.8 and 5.10 do not ship it): the group or taskkill suffice

                try:
                    parent = psutil.Process(self.pid)
                    for child in parent.children(recursive=True):
                        child.kill()
                    parent.kill()
                except psutil.Error:
                    pass
            except ImportError:
                pass
            if os.name == "nt":
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.pid)], capture_output=True)
        if os.name != "nt":  # Windows has no process groups to signal; taskkill ended the tree above
            try:
                os.killpg(self.pid, signal.SIGKILL)  # the group the child leads (start_new_session)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except OSError:  # the unread rest of a line could not be flushed to the ended child
                pass
        self._eof.wait(EOF_GRACE_S)


def collectOutput(process: ProcessProtocol, lines: list) -> Optional[int]:
    """Append the child's new output lines to `lines`; its exit code once it has ended and all its output is
    in, else None."""
    lines += process.readLines()
    code = process.poll()
    if code is not None:
        lines += process.readLines()  # what arrived between the read and the exit
    return code


def pythonExecutable() -> str:
    """Slicer's `PythonSlicer` when running inside Slicer, else the current interpreter."""
    app = getattr(__import__("slicer"), "app", None) if "slicer" in sys.modules else None
    if app is not None:
        home = app.slicerHome
        name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
        for candidate in (os.path.join(home, "bin", name), os.path.join(home, name)):
            if os.path.isfile(candidate):
                return candidate
    return sys.executable


def backendEnvironment(extra: Optional[dict] = None) -> dict:
    """Environment for a child running `-m dtc_training`: the folder holding the bundled (or installed)
    `dtc_training` package goes first on PYTHONPATH; output is unbuffered so progress arrives live, in UTF-8."""
    env = dict(os.environ)
    try:
        import importlib.util

        spec = importlib.util.find_spec("dtc_training")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        root = os.path.dirname(os.path.dirname(spec.origin))
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"  # what ChildProcess decodes; Windows pipes would get the ANSI code page
    env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    env.update(extra or {})
    return env


def parseEvent(line: str) -> Optional[dict]:
    """The trainer's JSON event on this line, or None for anything else (warnings, garbage, partial lines)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("event") not in EVENTS:
        return None
    return event


_FAILURES = [
    (re.compile(r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED", re.I),
     "The GPU ran out of memory. Use a smaller patch size or batch size, close other GPU programs, "
     "or choose the CPU device."),
    (re.compile(r"DefaultCPUAllocator|not enough memory|MemoryError|Killed", re.I),
     "The computer ran out of memory (RAM). Use a smaller patch size or batch size, or fewer/smaller volumes."),
    (re.compile(r"no kernel image is available|not compatible with the current PyTorch installation|"
                r"CUDA error: (invalid device function|unsupported)", re.I),
     "The installed PyTorch has no CUDA kernels for this GPU. Reinstall PyTorch with a CUDA version that "
     "supports it (PyTorch module: Install with a newer backend), or choose the CPU device."),
    (re.compile(r"No space left on device|Disk quota exceeded", re.I),
     "The disk is full. Nothing was left half-written: a training's last checkpoint is intact and Resume "
     "continues it once there is space (finished runs in the work folder, ~/.dtcsegmentation/runs by default, "
     "may go)."),
    (re.compile(r"Torch not compiled with CUDA|CUDA is not available|No CUDA GPUs are available", re.I),
     "A CUDA device was requested but this PyTorch cannot use a GPU. Choose 'auto' or 'cpu', or install a "
     "CUDA build of PyTorch."),
]
_MISSING = re.compile(r"(?:ModuleNotFoundError|ImportError): No module named '([^']+)'")


def explainFailure(returnCode: Optional[int], logLines: Iterable[str]) -> str:
    """A sentence naming the cause of a failed child, from its exit code and output."""
    lines = list(logLines)
    if returnCode == EXIT_DIVERGED:
        return _divergedText(lines)
    text = "\n".join(lines)
    missing = _MISSING.findall(text)
    if missing:
        package = missing[-1].split(".")[0]
        return (f"The Python package '{package}' is missing in the Python that ran the job. Install the "
                "dependencies (Dependencies section, or pip install it) and try again.")
    for pattern, message in _FAILURES:
        if pattern.search(text):
            return message
    if returnCode == EXIT_BAD_INPUT:
        errors = [l for l in lines if "error" in l.lower()] or lines[-3:]
        return "The input was refused: " + " ".join(e.strip() for e in errors[-3:])
    if returnCode is not None and returnCode < 0:
        return f"The process was ended by signal {-returnCode}."
    tail = [l for l in lines if l.strip() and parseEvent(l) is None]
    last = tail[-1].strip() if tail else "no output"
    return f"The process failed with exit code {returnCode}: {last}"


def _divergedText(lines: list) -> str:
    """What a training that diverged (exit code 4) kept, from its `diverged` event."""
    event = next((e for e in map(parseEvent, reversed(lines)) if e and e["event"] == "diverged"), {})
    where = f" at iteration {event['iteration']}" if "iteration" in event else ""
    kept = event.get("checkpoint_iteration")
    return (f"The training diverged{where}: its loss or weights became NaN or infinite, so no model was saved. "
            + (f"Its checkpoint of iteration {kept} is kept: lower the learning rate, then Resume continues from "
               "it, or Train starts again." if kept else "Lower the learning rate and train again."))
