"""Training progress: one JSON object per line on stdout (what the Slicer module and other GUIs
parse) or a progress bar when stdout is a terminal; every event is also appended to
`progress.jsonl` in the run folder, which survives restarts. Both are strict JSON whatever happens: a loss
that became NaN or infinite is written as the string "nan" or "inf", not as a bare NaN no parser accepts."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .files import strict_json


def _open_log(path: Path):
    """Open for appending, after dropping a last line that a kill cut short, which the next record would
    otherwise extend into one unreadable line."""
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
    return open(path, "a", encoding="utf-8")


class ProgressReporter:
    def __init__(self, log_path: Path | None, mode: str = "auto", stream=None, enabled: bool = True):
        self.stream = stream or sys.stdout
        self.bar = mode == "bar" or (mode == "auto" and self.stream.isatty())
        self.enabled = enabled  # only rank 0 reports in distributed runs
        self.log = _open_log(log_path) if (log_path and enabled) else None
        self.output_lost = False  # the stream can no longer be written (the log file still is)

    def emit(self, event: str, **values) -> None:
        if not self.enabled:
            return
        record = {"event": event, "time": round(time.time(), 3), **values}
        line = strict_json(record)
        if self.log:
            self.log.write(line + "\n")
            self.log.flush()
        if self.output_lost:
            return
        try:
            if not self.bar:
                print(line, file=self.stream, flush=True)
            elif event == "progress":
                self._draw(record)
            else:
                self.stream.write("\r\033[K" + self._describe(record) + "\n")
                self.stream.flush()
        except OSError:  # the reader is gone: a GUI that crashed (broken pipe), a closed terminal (I/O error)
            self._lose_output()

    def _lose_output(self) -> None:
        self.output_lost = True
        try:  # so that the interpreter's last flush at exit does not fail on it again
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.stream.fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError):  # a stream without a file descriptor
            pass

    def _draw(self, r: dict) -> None:
        done = r["iteration"] / r["total"]
        bar = "#" * int(30 * done) + "-" * (30 - int(30 * done))
        eta = time.strftime("%H:%M:%S", time.gmtime(r["eta_s"]))
        self.stream.write(f"\r[{bar}] {r['iteration']}/{r['total']} loss {r['loss']:.4f} "
                          f"{r['it_per_s']:.2f} it/s ETA {eta}")
        self.stream.flush()

    @staticmethod
    def _describe(r: dict) -> str:
        details = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("event", "time"))
        return f"{r['event']}: {details}"

    def close(self) -> None:
        if self.bar and self.enabled and not self.output_lost:
            self.stream.write("\n")
        if self.log:
            self.log.close()
