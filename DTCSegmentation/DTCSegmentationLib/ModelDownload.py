"""Downloading a catalog model into the store without blocking the panel: `dtc models pull ID` in a child
process (as training and segmenting run), whose JSON lines give the progress; the panel polls it from its
QTimer. Cancelling ends the child; the partial file stays in the store's hidden `.downloads` folder, and
the next download of the model resumes it. Without Qt.

    download = ModelDownload(store, "dtc-la-16labels-official")
    while not download.poll():          # the panel's timer instead
        print(download.phase, download.done, download.total); time.sleep(0.5)
    print(download.state, download.message, download.name)
"""
from __future__ import annotations

import json
from typing import Optional

from .Process import EXIT_OK, ChildProcess, backendEnvironment, collectOutput, explainFailure, pythonExecutable

EVENTS = ("download", "converting", "pulled")  # the JSON lines of `dtc models pull --progress json`


class ModelDownload:
    def __init__(self, store, entryId: str, title: Optional[str] = None, processFactory=ChildProcess,
                 python: Optional[str] = None):
        self.entryId, self.title = entryId, title or entryId
        self.state = "running"  # running | done | failed | cancelled
        self.phase = "downloading"  # then "converting"
        self.done, self.total = 0, None
        self.name: Optional[str] = None  # the model's name in the store, once done
        self.message = ""
        self.log: list[str] = []
        self._read = 0
        self.process = processFactory(
            [python or pythonExecutable(), "-m", "dtc_training", "models", "--store", str(store.root),
             "pull", entryId, "--progress", "json"], env=backendEnvironment())

    @property
    def finished(self) -> bool:
        return self.state != "running"

    @property
    def fraction(self) -> Optional[float]:
        """Share downloaded, or None while the size is unknown or the file is being converted."""
        return self.done / self.total if self.total and self.phase == "downloading" else None

    def poll(self) -> bool:
        """Read the child's new lines; True once it has ended (`state`, `message` and `name` then say how)."""
        if self.finished:
            return True
        code = collectOutput(self.process, self.log)
        for line in self.log[self._read:]:
            event = _event(line)
            if event.get("event") == "download":
                self.done, self.total = event["done"], event.get("total")
            elif event.get("event") == "converting":
                self.phase = "converting"
            elif event.get("event") == "pulled":
                self.name = event["name"]
        self._read = len(self.log)
        if code is None:
            return False
        self.process.killTree()  # reap the conversion child, should one be left
        if code == EXIT_OK and self.name:
            self.state, self.message = "done", f"{self.title}: added to the model store as '{self.name}'"
        else:
            errors = [line.split(": error: ", 1)[1] for line in self.log if ": error: " in line]
            self.state = "failed"
            self.message = f"{self.title}: " + (errors[-1] if errors else explainFailure(code, self.log))
        return True

    def cancel(self) -> None:
        if not self.finished:
            self.process.killTree()
            self.state = "cancelled"
            self.message = f"{self.title}: download cancelled; downloading it again resumes where it stopped"


def _event(line: str) -> dict:
    """The download's event on this line, or {} for anything else (a warning, a partial line)."""
    try:
        event = json.loads(line) if line.lstrip().startswith("{") else {}
    except ValueError:
        return {}
    return event if isinstance(event, dict) and event.get("event") in EVENTS else {}
