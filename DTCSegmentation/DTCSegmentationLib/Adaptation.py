"""Adapting a model to a site, without Qt: what a training starts from (a new network, or a model of the
store fine-tuned with `dtc train --init`), the fine-tuning's defaults, and the unlabeled scans ordered by
the model's doubt ("correct these first": `dtc rank` in a child process, which the panel polls from its
timer as it polls the other children).

    path = startModel(store, "la-builtin")          # ValueError, in words, for a model gone from the store
    ranking = DoubtRanking(volumes, path)           # exports the volumes, starts `dtc rank`
    while not ranking.poll(): time.sleep(0.5)       # the panel's timer instead
    for volume, score in ranking.ranking: ...      # most doubtful first (None: neither head found the atrium)
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from .Parameters import SegmentParameters, TrainingParameters
from .Process import EXIT_OK, ChildProcess, backendEnvironment, collectOutput, explainFailure, pythonExecutable
from .SceneIO import writeVolume


# ------------------------------------------------------------------------------------- start from
def startChoices(store, models: Optional[list] = None) -> list[tuple[str, bool]]:
    """What a training may start from, as (store name, "" for a new network; is it the built-in model): a new
    network, then the built-in model and every model of the store (`models`, else `store.list()`, in order)."""
    return [("", False)] + [(info.name, info.builtin) for info in (store.list() if models is None else models)]


def startModel(store, startFrom: str) -> Path:
    """The model file that `startFrom` (a store name or a file) names, read and checked; a ValueError that
    says what to do when it has gone from the store since it was chosen, or is no DTC model."""
    try:
        path = store.resolve(startFrom)
    except ValueError:
        raise ValueError(f"Start from: the model '{startFrom}' is no longer in the model store ({store.root}); "
                         "choose another model, or a new network") from None
    try:
        store.readMetadata(path)
    except ValueError as e:
        raise ValueError(f"Start from: the model '{startFrom}' cannot be fine-tuned: {e}") from None
    return path


def _defaults(startFrom: str) -> dict:
    """Iterations and learning rate of a new network, or of a fine-tuning (`dtc train --init`'s defaults)."""
    if not startFrom:
        scratch = TrainingParameters()
        return {"iterations": scratch.iterations, "learningRate": scratch.learningRate}
    from dtc_training.config import FINE_TUNING  # torch-free; here, so that the module loads without the backend

    return {"iterations": FINE_TUNING["iterations"], "learningRate": FINE_TUNING["lr"]}


def switchStart(params: TrainingParameters, startFrom: str) -> TrainingParameters:
    """`params` starting from `startFrom`: iterations and learning rate still at the defaults of what it
    started from before take the defaults of the new start (a model that segments already needs far fewer
    steps); values the user typed are kept."""
    before, after = _defaults(params.startFrom), _defaults(startFrom)
    changed = {name: after[name] for name in after if getattr(params, name) == before[name]}
    return dataclasses.replace(params, startFrom=startFrom, **changed)


# ------------------------------------------------------------------------------ correct these first
class DoubtRanking:
    """The unlabeled volumes ordered by the model's doubt, most doubtful first: each volume written to a
    temporary folder and segmented by `dtc rank` in a child (which never blocks the panel)."""

    def __init__(self, volumes: list, modelPath, params: Optional[SegmentParameters] = None,
                 processFactory=ChildProcess, python: Optional[str] = None):
        params = params or SegmentParameters()
        self.state, self.message = "running", ""  # running | done | failed | cancelled
        self.ranking: list[tuple[object, Optional[float]]] = []  # (volume node, doubt score)
        self.log: list[str] = []
        self.folder = Path(tempfile.mkdtemp(prefix="dtc-rank-"))
        self._volumes = {}  # file name -> volume node
        try:
            for i, volume in enumerate(volumes):
                path = writeVolume(volume, self.folder / f"scan{i:03d}.nrrd")
                self._volumes[path.name] = volume
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        self.output = self.folder / "ranking.json"
        options = [] if params.device == "auto" else ["--device", params.device]
        if params.precision != "auto" and params.mode == "fast":
            options += ["--precision", params.precision]
        if params.orientations != 1:
            options += ["--tta", str(params.orientations)]
        self.process = processFactory(
            [python or pythonExecutable(), "-m", "dtc_training", "rank", "--model", str(modelPath),
             "--json", str(self.output), *options, *(str(self.folder / name) for name in self._volumes)],
            env=backendEnvironment())

    @property
    def finished(self) -> bool:
        return self.state != "running"

    def poll(self) -> bool:
        """Read the child's output; True once it has ended (`state`, `message` and `ranking` say how)."""
        if self.finished:
            return True
        code = collectOutput(self.process, self.log)
        if code is None:
            return False
        self.process.killTree()
        try:
            if code != EXIT_OK:
                raise RuntimeError(explainFailure(code, self.log))
            entries = json.loads(self.output.read_text(encoding="utf-8"))["ranking"]
            self.ranking = [(self._volumes[Path(e["input"]).name], e["doubt_score"]) for e in entries]
            self.state, self.message = "done", f"{len(self.ranking)} volumes ordered by doubt, most doubtful first"
        except (RuntimeError, OSError, ValueError, KeyError, TypeError) as e:
            self.state, self.message = "failed", f"Could not order the volumes by doubt: {e}"
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
        return True

    def cancel(self) -> None:
        if not self.finished:
            self.process.killTree()
            self.state, self.message = "cancelled", "Ordering by doubt cancelled"
            shutil.rmtree(self.folder, ignore_errors=True)

    def wait(self, timeout: float = 600.0) -> "DoubtRanking":
        """Block until it ends (headless use); cancelled after `timeout` seconds."""
        import time

        end = time.monotonic() + timeout
        while not self.poll():
            if time.monotonic() > end:
                self.cancel()
                break
            time.sleep(0.1)
        return self
