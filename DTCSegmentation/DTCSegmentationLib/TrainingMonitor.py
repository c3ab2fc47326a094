"""What a `dtc train` child has reported: its JSON events (stdout or the run's progress.jsonl) read one line
at a time into iterations, losses, validation Dice, checkpoint and model, for the panel's status line,
progress bar and curves."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Optional

from .Process import parseEvent


@dataclass
class TrainingMonitor:
    """What the child has reported so far (fed one line at a time)."""
    total: int = 0
    iteration: int = 0
    device: str = ""
    etaSeconds: Optional[float] = None
    itPerSecond: Optional[float] = None
    losses: list = field(default_factory=list)  # (iteration, loss, loss_dice, loss_levelset, loss_consistency)
    dice: list = field(default_factory=list)  # (iteration, dice)
    checkpoint: str = ""
    checkpointIteration: Optional[int] = None  # where a resume continues
    modelPath: str = ""
    stoppedAt: Optional[int] = None
    divergedAt: Optional[int] = None  # the iteration whose loss or weights became NaN or infinite
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=400))
    ignored: int = 0  # lines that were not events
    count: int = 0  # lines fed so far (the log keeps the last 400)

    def feed(self, line: str) -> Optional[dict]:
        self.log.append(line)
        self.count += 1
        event = parseEvent(line)
        if event is None:
            self.ignored += 1
            return None
        try:
            self._apply(event)
        except (TypeError, ValueError, KeyError):
            self.ignored += 1  # an event with unexpected fields is logged, never fatal
            return None
        return event

    def _apply(self, e: dict) -> None:
        kind = e["event"]
        if kind == "start":
            self.total = int(e.get("total") or self.total)
            self.device = str(e.get("device", ""))
            self.iteration = int(e.get("start_iteration", e.get("iteration", self.iteration)) or 0)
            self.divergedAt = None
            # a run killed after its last checkpoint redoes those iterations: the curves drop the first try
            self.losses = [entry for entry in self.losses if entry[0] <= self.iteration]
            self.dice = [entry for entry in self.dice if entry[0] <= self.iteration]
        elif kind == "progress":
            self.iteration = int(e["iteration"])
            self.total = int(e.get("total") or self.total)
            self.etaSeconds = e.get("eta_s")
            self.itPerSecond = e.get("it_per_s")
            self.losses.append((self.iteration, float(e.get("loss", "nan")), float(e.get("loss_dice", "nan")),
                                float(e.get("loss_levelset", "nan")), float(e.get("loss_consistency", "nan"))))
        elif kind == "validation":
            self.dice.append((int(e["iteration"]), float(e["dice"])))
        elif kind == "checkpoint":
            self.checkpoint = str(e.get("path", ""))
            self.checkpointIteration = int(e["iteration"])
        elif kind == "stopped":
            self.stoppedAt = self.checkpointIteration = int(e.get("iteration", self.iteration))
            self.checkpoint = str(e.get("checkpoint", self.checkpoint))
        elif kind == "diverged":
            self.divergedAt = int(e["iteration"])
        elif kind == "done":
            self.modelPath = str(e.get("model", ""))
            self.iteration = int(e.get("iterations", self.iteration))

    @property
    def fraction(self) -> float:
        return min(1.0, self.iteration / self.total) if self.total else 0.0

    def statusText(self) -> str:
        if not self.total:
            return "Starting..."
        text = f"Iteration {self.iteration}/{self.total} ({100 * self.fraction:.0f}%)"
        if self.etaSeconds is not None and self.iteration < self.total:
            text += f", about {formatDuration(self.etaSeconds)} left"
        if self.losses:
            text += f", loss {self.losses[-1][1]:.4f}"
        if self.dice:
            text += f", validation Dice {self.dice[-1][1]:.3f}"
        return text


def formatDuration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"
