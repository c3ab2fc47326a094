"""Stopping a training gracefully: SIGTERM, SIGINT or SIGHUP, a STOP file in the run folder, or a progress
output that nobody reads any more become a flag that the training loop checks between iterations (it then
saves a checkpoint and exits with code 3)."""
from __future__ import annotations

import signal
from pathlib import Path

from .progress import ProgressReporter

STOP_FILE = "STOP"  # creating it asks a running training to checkpoint and exit (works on every OS)
OUTPUT_CLOSED = "output closed"  # stdout's reader went away: the GUI that started the run crashed
STOP_REASONS = (STOP_FILE, "SIGTERM", "SIGINT", "SIGHUP", OUTPUT_CLOSED)
# SIGHUP: the terminal closed (an SSH session ended without nohup or tmux); not on Windows
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))


class StopRequest:
    """Turns SIGTERM/SIGINT/SIGHUP, the STOP file and a progress output that nobody reads any more into a
    flag the loop checks between iterations."""

    def __init__(self, stop_file: Path, progress: ProgressReporter):
        # A STOP file already there counts: it may have been written while this process was starting.
        self.stop_file, self.progress, self.signal = stop_file, progress, None
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    @property
    def requested(self) -> str | None:
        if self.signal:
            return self.signal
        if self.stop_file.exists():
            return STOP_FILE
        return OUTPUT_CLOSED if self.progress.output_lost else None

    def honoured(self) -> None:
        """The run has stopped: remove the STOP file, so that the next run of this folder does not stop too."""
        self.stop_file.unlink(missing_ok=True)

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def leave_stopping_to_the_main_process(_worker_id: int) -> None:
    # Ctrl+C, a closed terminal's SIGHUP, and SIGTERM sent to the whole process group (a scheduler,
    # `kill -- -PGID`) reach the DataLoader workers too; a worker that died of it would end the run without
    # its checkpoint. The main process alone stops; the workers end with the loader, or with their parent
    # (DataLoader watches it).
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, signal.SIG_IGN)
