"""A warm inference child kept between Segment clicks: one `dtc serve` process (see its docstring for the
protocol) answers `dtc infer` requests, so that the backend's imports (about 5 s on a laptop CPU) and the
loaded model are paid by the first click only.

The child is started on demand (or ahead of time by `start`), restarted when it has ended (a crash, a kill,
an idle exit), and ended by `stop`, which is also how a running request is cancelled: a segmentation cannot
be interrupted half way, and a new child starts in seconds. It ends by itself when its standard input
closes, so it never outlives Slicer, and after `idleSeconds` without a request, so that an idle Slicer
does not hold its memory."""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Callable, Optional

from .Process import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, ChildProcess, InputProcessProtocol, \
    backendEnvironment, parseEvent, pythonExecutable

IDLE_EXIT_S = 600  # the warm child holds torch and the model (about 1 GB); returned after 10 idle minutes


@dataclass
class InferenceRequest:
    body: dict  # {"infer": [arguments of `dtc infer`]} or {"load": {"model": ..., "device": ..., ...}}
    id: int
    log: list = field(default_factory=list)  # the child's output while it worked on this request
    code: Optional[int] = None  # `dtc infer`'s exit code, once answered
    retried: bool = False


class InferenceServer:
    def __init__(self, processFactory: Callable[..., InputProcessProtocol] = ChildProcess,
                 python: Optional[str] = None, idleSeconds: float = IDLE_EXIT_S):
        self.processFactory = processFactory
        self.python = python
        self.idleSeconds = idleSeconds
        self.process: Optional[InputProcessProtocol] = None
        self._pending: list[InferenceRequest] = []  # sent and not answered, oldest first
        self._unclaimed: list[str] = []  # output before any request (an import error, warnings)
        self._idle = False  # the child announced its idle exit
        self.ready = False  # the child has imported the backend
        self._ids = itertools.count(1)
        self.preloaded: Optional[dict] = None  # the latest load request sent to this child

    def command(self) -> list[str]:
        return [self.python or pythonExecutable(), "-m", "dtc_training", "serve",
                "--idle-exit", str(self.idleSeconds)]

    @property
    def running(self) -> bool:
        return self.process is not None and not self._idle and self.process.poll() is None

    @property
    def pending(self) -> int:
        """Requests sent and not answered yet."""
        return len(self._pending)

    def start(self) -> None:
        """Start the child unless one is running; started ahead of a click, it has imported the backend by then."""
        if self.running:
            return
        if self.process is not None:
            if self._idle:
                self.process.killTree()  # it is leaving anyway
            self._collect()  # what the ended child left: answers, and the requests it did not answer
        if self.process is None:
            self.process = self.processFactory(self.command(), env=backendEnvironment(), acceptsInput=True)
            self._idle, self.ready, self._unclaimed, self.preloaded = False, False, [], None

    def submit(self, arguments: list) -> InferenceRequest:
        """Ask for `dtc infer ARGUMENTS`."""
        self.start()
        request = InferenceRequest({"infer": list(arguments)}, next(self._ids))
        request.log += self._unclaimed
        self._unclaimed = []
        self._send(request)
        return request

    def preload(self, load: dict) -> None:
        """Have the child load a model ahead of its first request (see `dtc serve`); once per child and model."""
        self.start()
        if load != self.preloaded:
            self.preloaded = dict(load)
            self._send(InferenceRequest({"load": self.preloaded}, next(self._ids)))

    def poll(self, request: Optional[InferenceRequest] = None) -> Optional[int]:
        """The request's exit code once answered (or the child's, when it ended first), else None. Without a
        request: read what the child said (`ready`)."""
        if (request is None or request.code is None) and self.process is not None:
            self._collect()
        return None if request is None else request.code

    def stop(self) -> None:
        """End the child now; the requests it was working on end as interrupted."""
        if self.process is not None:
            self.process.killTree()
            self.process, self.ready = None, False
        for request in self._pending:
            request.code = EXIT_INTERRUPTED
        self._pending = []

    def _send(self, request: InferenceRequest) -> None:
        self._pending.append(request)
        try:
            self.process.send(json.dumps({"id": request.id, **request.body}))
        except OSError:
            pass  # the child has ended: _collect reports how

    def _collect(self) -> None:
        process = self.process
        for line in process.readLines():
            self._dispatch(line)
        code = process.poll()
        if code is None:
            return
        for line in process.readLines():  # what arrived between the read and the exit
            self._dispatch(line)
        process.killTree()  # reap anything it left behind
        self.process, self.ready, unanswered, self._pending = None, False, self._pending, []
        idle = self._idle
        for request in unanswered:
            if idle and not request.retried:  # sent while the child was leaving for idleness: ask a new one
                request.retried = True
                self.start()
                self._send(request)
            else:
                request.code = code if code != EXIT_OK else EXIT_ERROR

    def _dispatch(self, line: str) -> None:
        event = parseEvent(line)
        if event is not None and event["event"] in ("ready", "idle"):
            self.ready, self._idle = event["event"] == "ready", event["event"] == "idle"
        elif event is not None and event["event"] == "answer":
            request = next((r for r in self._pending if r.id == event.get("id")), None)
            if request is not None:
                request.code = int(event.get("code", EXIT_ERROR))
                self._pending.remove(request)
        elif self._pending:
            self._pending[0].log.append(line)
        else:
            self._unclaimed.append(line)
