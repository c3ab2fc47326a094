"""A warm inference child kept between Segment clicks: one `dtc serve` process (see its docstring for the
protocol) answers `dtc infer` requests, so that the backend's imports (about 5 s on a laptop CPU) and the
loaded model are paid by the first click only.

The child is started on demand (or ahead of time by `start`), restarted when it has ended (a crash, a kill,
an idle exit), and ended by `stop`, which is also how a running request is cancelled: a segmentation cannot
be interrupted half way, and a new child starts in seconds. It ends by itself when its standard input
closes, so it never outlives Slicer, and after `idleSeconds` without a request, so that an idle Slicer
does not hold its memory.

The requests travel on the child's standard input, which Slicer's `PythonSlicer` launcher must pass on to
the Python it starts. Where it does not (a launcher version or platform not seen here), the child never
says it `received` a request: either its input ends at once or nothing arrives. The server then sends that
request, and every later one, to a child of its own (`dtc serve --request`): slower, as every click pays
the imports again, but working."""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .Process import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, ChildProcess, InputProcessProtocol, \
    backendEnvironment, parseEvent, pythonExecutable

IDLE_EXIT_S = 600  # the warm child holds torch and the model (about 1 GB); returned after 10 idle minutes
INPUT_TIMEOUT_S = 20.0  # a ready child that has not received a request this long after it was sent never will


@dataclass
class InferenceRequest:
    body: dict  # {"infer": [arguments of `dtc infer`]} or {"load": {"model": ..., "device": ..., ...}}
    id: int
    log: list = field(default_factory=list)  # the child's output while it worked on this request
    code: Optional[int] = None  # `dtc infer`'s exit code, once answered
    retried: bool = False
    sentAt: Optional[float] = None  # time.monotonic() when handed to a child
    received: bool = False  # the child said it read it
    answer: dict = field(default_factory=dict)  # the answer event (with --uncertainty: each scan's "doubt")


class InferenceServer:
    def __init__(self, processFactory: Callable[..., InputProcessProtocol] = ChildProcess,
                 python: Optional[str] = None, idleSeconds: float = IDLE_EXIT_S):
        self.processFactory = processFactory
        self.python = python
        self.idleSeconds = idleSeconds
        self.inputTimeout = INPUT_TIMEOUT_S
        self.inputWorks: Optional[bool] = None  # whether the child's standard input reaches it (None: not known yet)
        self._readyAt = 0.0
        self.process: Optional[InputProcessProtocol] = None
        self._pending: list[InferenceRequest] = []  # not answered yet (sent or waiting), oldest first
        self._unclaimed: list[str] = []  # output before any request (an import error, warnings)
        self._idle = False  # the child announced its idle exit
        self.ready = False  # the child has imported the backend
        self._ids = itertools.count(1)
        self.preloaded: Optional[InferenceRequest] = None  # the latest load request sent to this child

    def command(self) -> list[str]:
        return [self.python or pythonExecutable(), "-m", "dtc_training", "serve",
                "--idle-exit", str(self.idleSeconds)]

    @property
    def running(self) -> bool:
        return self.process is not None and not self._idle and self.process.poll() is None

    @property
    def oneShot(self) -> bool:
        """Each request in a child of its own: the children cannot be sent requests (see the module notes)."""
        return self.inputWorks is False

    @property
    def pending(self) -> int:
        """Requests sent and not answered yet."""
        return len(self._pending)

    def start(self) -> None:
        """Start the child unless one is running; started ahead of a click, it has imported the backend by then."""
        if self.running or self.oneShot:
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

    def preload(self, load: dict) -> Optional[InferenceRequest]:
        """Have the child load a model ahead of its first request (see `dtc serve`); once per child and model.
        The load request (answered with 0 once the model is ready), or None where nothing loads ahead."""
        self.start()
        if self.oneShot:
            return None
        if self.preloaded is None or self.preloaded.body["load"] != load:
            self.preloaded = InferenceRequest({"load": dict(load)}, next(self._ids))
            self._send(self.preloaded)
        return self.preloaded

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
        self._transmit()

    def _transmit(self) -> None:
        """Hand the pending requests not sent yet to the child: all of them on its input, or in one-shot mode
        the oldest, to a child of its own, once the previous one has ended."""
        unsent = [r for r in self._pending if r.sentAt is None]
        if not unsent:
            return
        if self.oneShot:
            for request in [r for r in unsent if "load" in r.body]:  # nothing to load ahead for
                request.code = EXIT_OK
                self._pending.remove(request)
            unsent = [r for r in unsent if "load" not in r.body]
            if self.process is None and unsent:
                unsent[0].sentAt = time.monotonic()
                self.process = self.processFactory(self.command() + ["--request", self._line(unsent[0])],
                                                   env=backendEnvironment())
            return
        self.start()
        for request in unsent:
            request.sentAt = time.monotonic()
            try:
                self.process.send(self._line(request))
            except OSError:
                pass  # the child has ended: _collect reports how

    @staticmethod
    def _line(request: InferenceRequest) -> str:
        return json.dumps({"id": request.id, **request.body})

    def _inputLost(self) -> bool:
        """A ready child has not received the oldest request long after it was sent."""
        if self.inputWorks is not None or not self.ready or not self._pending:
            return False
        oldest = self._pending[0]
        return (oldest.sentAt is not None and not oldest.received
                and time.monotonic() - max(oldest.sentAt, self._readyAt) > self.inputTimeout)

    def _collect(self) -> None:
        process = self.process
        for line in process.readLines():
            self._dispatch(line)
        code = process.poll()
        if code is None:
            if not self._inputLost():
                return
            process.killTree()
            code = process.poll()
        for line in process.readLines():  # what arrived between the read and the exit
            self._dispatch(line)
        process.killTree()  # reap anything it left behind
        unanswered = [r for r in self._pending if r.sentAt is not None]
        inputLost = (self.inputWorks is None and self.ready and bool(unanswered)
                     and not any(r.received for r in unanswered))  # ready, yet it never read a request
        if inputLost:
            self.inputWorks = False
        leftForIdleness = self._idle
        self.process, self.ready, self._pending = None, False, [r for r in self._pending if r.sentAt is None]
        for request in unanswered:
            if (leftForIdleness or inputLost) and not request.retried:  # ask a new child
                request.retried, request.sentAt, request.received = True, None, False
                self._pending.append(request)
            else:
                request.code = code if code != EXIT_OK else EXIT_ERROR
        self._transmit()

    def _dispatch(self, line: str) -> None:
        event = parseEvent(line)
        if event is not None and event["event"] in ("ready", "idle"):
            self.ready, self._idle = event["event"] == "ready", event["event"] == "idle"
            self._readyAt = time.monotonic()
        elif event is not None and event["event"] == "received":
            request = next((r for r in self._pending if r.id == event.get("id")), None)
            if request is not None:
                request.received = True
                if self.inputWorks is None:
                    self.inputWorks = True
        elif event is not None and event["event"] == "answer":
            request = next((r for r in self._pending if r.id == event.get("id")), None)
            if request is not None:
                request.code = int(event.get("code", EXIT_ERROR))
                request.answer = event
                self._pending.remove(request)
        elif self._pending:
            self._pending[0].log.append(line)
        else:
            self._unclaimed.append(line)
