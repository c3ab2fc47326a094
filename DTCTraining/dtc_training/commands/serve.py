"""`dtc serve`: answer `dtc infer` requests read from standard input in one long-lived process, so that the
backend's imports (seconds) and the loaded model are paid once, not per scan. The Slicer module keeps one
such child between Segment clicks.

Protocol, one JSON object per line:
    request (stdin):  {"id": 7, "infer": ["--model", "m.pt", "scan.nrrd", "-o", "label.nrrd", ...]}
                      {"id": 8, "load": {"model": "m.pt", "device": "auto", "precision": "auto"}}
    output (stdout):  {"event": "ready"} once the imports are done;
                      {"event": "received", "id": 7} as soon as a request is read;
                      the request's log lines;
                      {"event": "answer", "id": 7, "code": 0}.
`code` is the exit code `dtc infer` would have returned (0, 1 with a traceback, 2 with the message). The
answer to a successful request with `--uncertainty` also carries `"doubt": [{"input", "doubt", "doubt_score"},
...]`: each scan's doubt map file and score, so the caller needs no report file. A
`load` request loads a model ahead of its first scan, with its fast-mode network (BN folded, and quantized
for int8): about 2 s that a clinician's first click then does not wait for. The process ends at the end of
its input, or after `--idle-exit` seconds without a request, when it first prints {"event": "idle"}.
`--request JSON` answers that one request and ends: for a caller whose launcher does not pass its standard
input on (`received` is how the caller finds out)."""
from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import traceback
from functools import partial
from pathlib import Path

from ..options import nonnegative_float

HELP = "answer dtc infer requests (JSON lines on standard input) with models kept loaded between them"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--idle-exit", type=nonnegative_float, default=0, metavar="SECONDS",
                   help="end after this many seconds without a request (default 0: never)")
    p.add_argument("--request", metavar="JSON", help="answer this one request instead of reading standard input")


class LoadedModel:
    """The model of the latest request, kept while its file and device stay the same (one at a time: a
    second model in memory would double the child's footprint for a rare case)."""

    def __init__(self):
        self.key, self.model = None, None

    def get(self, path: Path, device: str):
        from ..infer import Model

        try:
            stat = path.stat()
            key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, device)
        except OSError:
            key = None  # Model.load names the problem
        if key is None or key != self.key:
            self.key, self.model = None, None  # the old model is freed before the new one loads
            self.model = Model.load(path, device)
            self.key = key
        return self.model


def _event(event: str, **fields) -> None:
    """One JSON line, in one write: the reader thread's lines must not split the main thread's."""
    from ..files import strict_json

    sys.stdout.write(strict_json({"event": event, **fields}) + "\n")  # a request's id may be NaN
    sys.stdout.flush()


def _read_requests(requests: "queue.Queue[str | None]") -> None:
    """Queue each line of standard input, and say at once that it arrived (the answer may come much later)."""
    for line in sys.stdin:
        if line.strip():
            try:
                request_id = json.loads(line).get("id")
            except (ValueError, AttributeError):
                request_id = None  # refused when its turn comes
            _event("received", id=request_id)
            requests.put(line)
    requests.put(None)


def preload(models: LoadedModel, model: str, device: str = "auto", precision: str = "auto",
            mode: str = "fast") -> int:
    from ..precision import inference_device, resolve_precision

    loaded = models.get(Path(model), inference_device(device, precision))
    if mode == "fast":
        loaded.fast_network(resolve_precision(precision, mode, loaded.device))
    return 0


def answer(line: str, parser: argparse.ArgumentParser, models: LoadedModel) -> tuple[object, int, dict]:
    """Run one request line; its id, exit code and the answer's extra fields (see the module's docstring)."""
    from ..cli import EXIT_BAD_INPUT, EXIT_ERROR, run_command

    try:
        request = json.loads(line)
        request_id = request.get("id")
        if "load" in request:
            args = argparse.Namespace(command="serve", run=lambda _: preload(models, **request["load"]))
        else:
            arguments, args = request["infer"], None
            if not isinstance(arguments, list) or not all(isinstance(a, str) for a in arguments):
                raise TypeError("'infer' must be a list of strings")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        print(f"dtc serve: error: request {line.strip()[:200]!r} refused: {e}", file=sys.stderr)
        return None, EXIT_BAD_INPUT, {}
    extra: dict = {}
    try:
        if args is None:
            args = parser.parse_args(arguments)
            args.run = partial(args.run, answer=extra)
        return request_id, run_command(args), extra
    except SystemExit as e:  # argparse has printed the usage error
        return request_id, e.code if isinstance(e.code, int) else EXIT_BAD_INPUT, {}
    except Exception:  # the process lives on: the next request may well succeed
        traceback.print_exc()
        return request_id, EXIT_ERROR, {}


def run(args) -> int:
    import torch

    from .. import infer as backend  # noqa: F401  imported now, before any request: the time saved per scan
    from . import infer

    models = LoadedModel()
    parser = argparse.ArgumentParser(prog="dtc infer")
    infer.add_arguments(parser)
    parser.set_defaults(run=partial(infer.run, models=models), command="infer")
    _event("ready")

    def respond(line: str) -> None:
        request_id, code, extra = answer(line, parser, models)
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()  # give the GPU back to a training between clicks
        sys.stderr.flush()  # the request's messages before its answer
        _event("answer", id=request_id, code=code, **(extra if code == 0 else {}))

    if args.request is not None:
        respond(args.request)
        return 0
    requests: "queue.Queue[str | None]" = queue.Queue()
    threading.Thread(target=_read_requests, args=(requests,), name="dtc-serve-stdin", daemon=True).start()
    while True:
        try:
            line = requests.get(timeout=min(args.idle_exit, threading.TIMEOUT_MAX) or None)
        except queue.Empty:
            _event("idle", seconds=args.idle_exit)
            return 0
        if line is None:
            return 0
        respond(line)
