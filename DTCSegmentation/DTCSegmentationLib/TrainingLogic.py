"""Training from the scene: export the chosen nodes with their geometry, write the datalist, run
`dtc train` in a child Python, follow its JSON progress, stop gracefully, resume.

Usage (Slicer's Python console, a `--python-script`, or plain Python with slicer-core)::

    logic = TrainingLogic()
    job = logic.start([LabeledPair(volume, segmentation)], [unlabeledVolume], TrainingParameters(iterations=200))
    while not job.finished:            # the widget polls from a QTimer instead
        logic.poll(job); time.sleep(0.5)
    print(job.state, job.monitor.modelPath)
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .Adaptation import startModel
from .Parameters import LabeledPair, TrainingParameters, dumpParameters, loadParameters
from .Process import (EXIT_INTERRUPTED, EXIT_OK, ChildProcess, ProcessProtocol, backendEnvironment,
                      explainFailure, pythonExecutable)
from .SceneIO import exportLabel, writeVolume
from .TrainingMonitor import TrainingMonitor
from .Validation import checkTrainingInputs

STOP_GRACE_S = 120.0  # after this, Stop ends the process tree without waiting for the checkpoint


PARAMETERS_FILE = "parameters.json"  # the panel's training parameters, kept in the run folder
# what dtc train writes there (dtc_training's names, repeated so that this module loads without the backend)
CHECKPOINT_FILE, MODEL_FILE, PROGRESS_FILE = "checkpoint.pt", "model.safetensors", "progress.jsonl"


def defaultWorkRoot() -> Path:
    """Where the panel's runs go: beside the model store rather than in the temporary folder, which many
    systems empty at a reboot, taking with it the checkpoint that resuming after a crash needs."""
    env = os.environ.get("DTC_WORK_ROOT")
    return Path(env) if env else Path.home() / ".dtcsegmentation" / "runs"


def _writeAtomically(path: Path, text: str) -> None:
    """A crash or a full disk leaves the old file or none, never part of one (the backend's writer, imported
    here so that the module loads, and can offer to install it, where the backend is missing)."""
    from dtc_training.files import atomic_write

    atomic_write(path, lambda f: f.write(text), mode="w")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40] or "volume"


def exportDataset(pairs: list[LabeledPair], unlabeled: list, folder: str | os.PathLike) -> Path:
    """Write every labeled volume, its 0/1 label on the volume's grid, and the unlabeled volumes as NRRD
    under `folder`, and a datalist.json with paths relative to it. Returns the datalist path."""
    folder = Path(folder)
    datalist = {"labeled": [], "unlabeled": []}
    for i, pair in enumerate(pairs):
        stem = f"case_{i:03d}_{_safe(pair.volume.GetName())}"
        image = writeVolume(pair.volume, folder / "images" / f"{stem}.nrrd")
        label = exportLabel(pair.label, pair.segment, pair.volume, folder / "labels" / f"{stem}.nrrd")
        datalist["labeled"].append({"image": image.relative_to(folder).as_posix(),
                                    "label": label.relative_to(folder).as_posix()})
    for i, volume in enumerate(unlabeled):
        image = writeVolume(volume, folder / "unlabeled" / f"u_{i:03d}_{_safe(volume.GetName())}.nrrd")
        datalist["unlabeled"].append({"image": image.relative_to(folder).as_posix()})
    path = folder / "datalist.json"
    _writeAtomically(path, json.dumps(datalist, indent=2))
    return path


@dataclass
class TrainingJob:
    outDir: Path
    datalist: Path
    params: TrainingParameters
    process: Optional[ProcessProtocol] = None
    monitor: TrainingMonitor = field(default_factory=TrainingMonitor)
    state: str = "idle"  # running | stopping | stopped | done | failed
    returnCode: Optional[int] = None
    message: str = ""
    initModel: Optional[Path] = None  # the model a new run fine-tunes (params.startFrom's file), checked
    stopDeadline: Optional[float] = None
    endedAfterGrace: bool = False  # it did not stop by itself in time, and the logic ended it

    @property
    def finished(self) -> bool:
        return self.state in ("stopped", "done", "failed")

    @property
    def canResume(self) -> bool:
        return self.state in ("stopped", "failed") and (self.outDir / CHECKPOINT_FILE).is_file()

    @property
    def modelPath(self) -> Path:
        return Path(self.monitor.modelPath) if self.monitor.modelPath else self.outDir / MODEL_FILE

    def logTail(self, n: int = 30) -> str:
        return "\n".join(list(self.monitor.log)[-n:])


ProcessFactory = Callable[..., ProcessProtocol]


class TrainingLogic:
    def __init__(self, processFactory: ProcessFactory = ChildProcess, python: Optional[str] = None,
                 workRoot: Optional[str | os.PathLike] = None, store=None):
        self.processFactory = processFactory
        self.python = python
        self.workRoot = Path(workRoot) if workRoot else defaultWorkRoot()
        self._store = store  # where a model to start from is looked up (the user's store, made when needed)

    @property
    def store(self):
        if self._store is None:
            from .ModelStore import ModelStore  # here: the module loads where the backend is missing

            self._store = ModelStore()
        return self._store

    def command(self, job: TrainingJob, resume: bool) -> list[str]:
        args = [self.python or pythonExecutable(), "-m", "dtc_training", "train", "--datalist", str(job.datalist),
                "-o", str(job.outDir), "--progress", "json", *job.params.arguments()]
        if resume:  # a resumed run continues from its checkpoint and never reads its starting model again
            return args + ["--resume"]
        return args + (["--init", str(job.initModel)] if job.initModel is not None else [])

    def prepare(self, pairs: list[LabeledPair], unlabeled: list, params: TrainingParameters,
                outDir: Optional[str | os.PathLike] = None) -> TrainingJob:
        """Validate the inputs and export them; raises ValueError listing every problem."""
        report = checkTrainingInputs(pairs, unlabeled, params)
        if not report.ok:
            raise ValueError(report.tooltip())
        initModel = startModel(self.store, params.startFrom) if params.startFrom else None  # gone: said here
        if outDir is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            outDir = self.workRoot / f"train-{stamp}"
        outDir = Path(outDir).resolve()  # the child runs in outDir: relative paths would point elsewhere
        earlier = [name for name in (CHECKPOINT_FILE, MODEL_FILE) if (outDir / name).is_file()]
        if earlier:  # exporting would replace its data under it
            raise ValueError(f"{outDir}: holds a training run already ({', '.join(earlier)}); resume it or "
                             "choose another folder")
        from dtc_training.files import check_writable_dir  # here: the module loads where the backend is missing

        check_writable_dir(outDir)  # a file in the way is said plainly (an InputError, a ValueError)
        datalist = exportDataset(pairs, unlabeled, outDir / "data")
        return TrainingJob(outDir=outDir, datalist=datalist, params=params, initModel=initModel)

    def reopen(self, outDir: str | os.PathLike) -> TrainingJob:
        """The stopped (or crashed) run of an earlier session in `outDir`, with the parameters it was last
        started or resumed with and its history (progress.jsonl: curves, iterations, checkpoint); `resume`
        continues it."""
        outDir = Path(outDir).resolve()
        saved = outDir / PARAMETERS_FILE
        if not saved.is_file():
            raise ValueError(f"{outDir}: not a training run of this module (no {PARAMETERS_FILE})")
        params = loadParameters(TrainingParameters, saved.read_text(encoding="utf-8"))
        job = TrainingJob(outDir, outDir / "data" / "datalist.json", params, state="stopped")
        history = outDir / PROGRESS_FILE
        if history.is_file():
            for line in history.read_text(encoding="utf-8", errors="replace").splitlines():
                job.monitor.feed(line)
        done = job.monitor.checkpointIteration
        job.message = (f"Unfinished training from an earlier session in {outDir}"
                       + (f": checkpoint at iteration {done} of {job.monitor.total}" if done is not None else "")
                       + (f"; it diverged at iteration {job.monitor.divergedAt}, so lower the learning rate first"
                          if job.monitor.divergedAt is not None else "")
                       + ". Resume continues it; Train starts a new one.")
        return job

    def unfinishedRuns(self) -> list[Path]:
        """The runs in the work folder that stopped or crashed before saving their model and that no trainer
        runs in now, newest checkpoint first: what `reopen` and `resume` continue."""
        try:
            from dtc_training.runlock import running_owner  # here: the module loads where the backend is missing
        except ImportError:
            return []  # nothing can resume them until the backend is installed
        try:
            runs = [folder for folder in self.workRoot.iterdir()
                    if (folder / PARAMETERS_FILE).is_file() and (folder / CHECKPOINT_FILE).is_file()
                    and not (folder / MODEL_FILE).is_file() and running_owner(folder) is None]
            return sorted(runs, key=lambda folder: (folder / CHECKPOINT_FILE).stat().st_mtime, reverse=True)
        except OSError:  # no work folder yet, or one this account cannot read: nothing to offer
            return []

    def reopenLatest(self) -> Optional[TrainingJob]:
        """The newest unfinished run that can be read back (Slicer closed or crashed while it trained), or None."""
        for folder in self.unfinishedRuns():
            try:
                return self.reopen(folder)
            except (ValueError, TypeError, OSError) as e:  # TypeError: parameters of another version
                logging.warning("Training run %s cannot be resumed: %s", folder, e)
        return None

    def start(self, pairs: list[LabeledPair], unlabeled: list, params: TrainingParameters,
              outDir: Optional[str | os.PathLike] = None) -> TrainingJob:
        job = self.prepare(pairs, unlabeled, params, outDir)
        return self.launch(job, resume=False)

    def launch(self, job: TrainingJob, resume: bool) -> TrainingJob:
        (job.outDir / "STOP").unlink(missing_ok=True)
        job.state, job.returnCode, job.message, job.stopDeadline, job.endedAfterGrace = "running", None, "", None, False
        job.monitor.feed(("Resuming" if resume else "Starting") + f" training in {job.outDir}")
        # the run folder keeps what it last ran with (a resume may change iterations, device, precision)
        _writeAtomically(job.outDir / PARAMETERS_FILE, dumpParameters(job.params))
        job.process = self.processFactory(self.command(job, resume), env=backendEnvironment(),
                                          cwd=str(job.outDir))
        return job

    def resume(self, job: TrainingJob) -> TrainingJob:
        """Continue a stopped (or crashed) job from its last checkpoint, with the same data."""
        if job.state in ("running", "stopping"):
            raise RuntimeError("the job is still running")
        if not (job.outDir / CHECKPOINT_FILE).is_file():
            raise ValueError(f"{job.outDir}: no checkpoint to resume from")
        return self.launch(job, resume=True)

    def stop(self, job: TrainingJob, grace: float = STOP_GRACE_S) -> None:
        """Ask the child to save a checkpoint and exit (STOP file, works on every OS); `poll` ends the
        process tree if it has not exited after `grace` seconds (or sooner, if an earlier stop said so)."""
        if job.state == "stopping":
            job.stopDeadline = min(job.stopDeadline, time.monotonic() + grace)
        if job.state != "running":
            return
        (job.outDir / "STOP").touch()
        job.state = "stopping"
        job.stopDeadline = time.monotonic() + grace

    def poll(self, job: TrainingJob) -> list[dict]:
        """Read the child's new lines; returns the new events. Updates `job.state` when it has ended."""
        if job.process is None or job.finished:
            return []
        events = [e for e in (job.monitor.feed(line) for line in job.process.readLines()) if e]
        code = job.process.poll()
        if code is None and job.stopDeadline is not None and time.monotonic() > job.stopDeadline:
            job.monitor.log.append("The process did not stop in time; ending it.")
            job.endedAfterGrace = True
            job.process.killTree()
            code = job.process.poll()
            if code is None:
                code = job.process.wait(10)
        if code is not None:
            events += [e for e in (job.monitor.feed(line) for line in job.process.readLines()) if e]
            job.process.killTree()  # reap anything the child left behind
            self._finish(job, code)
        return events

    def _finish(self, job: TrainingJob, code: int) -> None:
        job.returnCode = code
        (job.outDir / "STOP").unlink(missing_ok=True)
        if code == EXIT_OK and job.modelPath.is_file():
            job.state, job.message = "done", f"Training finished: {job.modelPath}"
        elif code == EXIT_INTERRUPTED:
            job.state = "stopped"
            job.message = (f"Stopped at iteration {job.monitor.stoppedAt or job.monitor.iteration}; "
                           "the checkpoint is saved, Resume continues.")
        elif job.endedAfterGrace:  # what a resume has is its last checkpoint
            job.state = "stopped"
            saved = job.monitor.checkpointIteration
            job.message = "Ended before it could stop by itself; " + (
                "no checkpoint was saved, so there is nothing to resume." if not job.canResume else
                f"Resume continues from the checkpoint at iteration {saved}." if saved else
                "Resume continues from its last checkpoint.")
        else:
            job.state = "failed"
            job.message = explainFailure(code, job.monitor.log)

    def wait(self, job: TrainingJob, timeout: Optional[float] = None, onEvent=None,
             grace: float = STOP_GRACE_S) -> TrainingJob:
        """Block until the job ends (headless use). A job still running after `timeout` seconds is stopped as
        Stop does (a checkpoint, so that it can be resumed; ended after `grace` seconds), then TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        timedOut = False
        while not job.finished:
            for event in self.poll(job):
                if onEvent:
                    onEvent(event)
            if deadline is not None and time.monotonic() > deadline and not timedOut:
                timedOut = True
                self.stop(job, grace)
            time.sleep(0.1)
        if timedOut and job.state != "done":
            raise TimeoutError(f"training did not finish within {timeout:g} s; {job.message}")
        return job
