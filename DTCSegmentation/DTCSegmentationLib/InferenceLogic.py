"""Segmenting a volume of the scene: export it (cropped to an ROI if given), have the warm inference child
(`InferenceServer`) run `dtc infer` on it, import the label map as the "Left atrium" segment of a
segmentation node (created once, updated on later runs). With `SegmentParameters(uncertainty=True)` the
child also writes the two heads' doubt map and score: the map is loaded as the volume node "<scan> doubt"
(`job.doubtNode`, see Doubt.py) and the score kept in `job.doubtScore` (None where neither head found the
atrium).

Usage (blocking, e.g. from a `--python-script`)::

    logic = InferenceLogic()
    job = logic.segment(volumeNode, "my-model")       # a model-store name or a model file path
    print(job.segmentationNode.GetName(), job.segmentId)
    logic.shutdown()  # or let the logic go: its child ends with it
"""
from __future__ import annotations

import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .ModelStore import ModelStore
from .Parameters import SegmentParameters
from .InferenceServer import InferenceRequest, InferenceServer
from .Process import EXIT_OK, ChildProcess, explainFailure
from .SceneIO import cropToROI, importResult, isScalarVolume, writeVolume


@dataclass
class SegmentJob:
    inputVolume: object
    segmentationNode: object
    modelPath: Path
    workDir: Path
    resultPath: Path
    request: Optional[InferenceRequest] = None
    state: str = "running"  # running | done | failed | cancelled
    message: str = ""
    segmentId: str = ""
    log: list = field(default_factory=list)
    keepFiles: bool = False
    uncertainty: bool = False  # the doubt map and score were asked for
    doubtNode: object = None  # "<scan> doubt", once loaded
    doubtScore: Optional[float] = None  # mean doubt where either head says foreground (None: neither does)

    @property
    def finished(self) -> bool:
        return self.state != "running"


class InferenceLogic:
    def __init__(self, processFactory=ChildProcess, python: Optional[str] = None,
                 store: Optional[ModelStore] = None):
        self.store = store or ModelStore()
        self.server = InferenceServer(processFactory, python)
        self._endServer = weakref.finalize(self, self.server.stop)  # when the logic goes, or Python exits

    @staticmethod
    def arguments(modelPath: Path, inputPath: Path, resultPath: Path, params: SegmentParameters) -> list[str]:
        """Of `dtc infer`."""
        return ["--model", str(modelPath), str(inputPath), "-o", str(resultPath), *params.arguments()]

    def prepare(self, model=None, params: Optional[SegmentParameters] = None) -> Optional[InferenceRequest]:
        """Start the inference child ahead of the first click, and have it load `model` (a store name or a
        path) for `params`: the click then finds the backend imported and the model ready. Returns the load
        request (`self.server.poll(request)` is 0 once loaded), or None when nothing is loading."""
        self.server.start()
        if model is None:
            return None
        params = params or SegmentParameters()
        try:
            modelPath = self.store.resolve(model)  # not read here: that would import torch into Slicer's GUI
        except ValueError:
            return None  # the click will say what is wrong with it (as the child does to a bad model file)
        return self.server.preload({"model": str(modelPath), "device": params.device,
                                    "precision": params.precision, "mode": params.mode})

    def shutdown(self) -> None:
        """End the inference child (Slicer closing, packages reinstalled); the next click starts a new one."""
        self.server.stop()

    def start(self, inputVolume, model, segmentationNode=None, roi=None,
              params: Optional[SegmentParameters] = None, keepFiles: bool = False) -> SegmentJob:
        """Start segmenting `inputVolume` with `model` (store name or path). Raises ValueError for bad input,
        including a model file of another kind."""
        params = params or SegmentParameters()
        problems = params.problems()
        if not isScalarVolume(inputVolume):
            problems.append("choose a scalar input volume")
        elif roi is not None and inputVolume.GetParentTransformNode() is not None:
            problems.append(f"{inputVolume.GetName()} is under a transform, which the ROI would not follow; "
                            "harden the transform first")
        if problems:
            raise ValueError("; ".join(problems))
        try:
            modelPath = self.store.resolve(model)
        except ValueError as e:
            raise ValueError(str(e)) from None
        self.store.readMetadata(modelPath)  # refuses a model of another kind (ModelStoreError is a ValueError)
        mrmlScene = inputVolume.GetScene()
        workDir = Path(tempfile.mkdtemp(prefix="dtc-segment-"))
        source = inputVolume
        try:
            if roi is not None:
                source = cropToROI(inputVolume, roi, "dtc-roi-crop")
            inputPath = writeVolume(source, workDir / "input.nrrd")
        except BaseException:
            shutil.rmtree(workDir, ignore_errors=True)
            raise
        finally:
            if source is not inputVolume:
                mrmlScene.RemoveNode(source)
        if segmentationNode is None:
            segmentationNode = mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                           f"{inputVolume.GetName()} segmentation")
        # The volume is written in its own coordinates, so the result belongs under the volume's transform.
        segmentationNode.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
        resultPath = workDir / "result.nrrd"
        job = SegmentJob(inputVolume, segmentationNode, modelPath, workDir, resultPath, keepFiles=keepFiles,
                         uncertainty=params.uncertainty)
        job.request = self.server.submit(self.arguments(modelPath, inputPath, resultPath, params))
        job.log = job.request.log
        return job

    def poll(self, job: SegmentJob) -> bool:
        """Collect output; once the child has answered, import the result. Returns True once finished."""
        if job.finished:
            return True
        code = self.server.poll(job.request)
        if code is None:
            return False
        try:
            if code == EXIT_OK and job.resultPath.is_file():
                job.segmentId = importResult(job.resultPath, job.segmentationNode, job.inputVolume)
                if job.uncertainty:
                    self._importDoubt(job)
                job.state, job.message = "done", f"Segmented {job.inputVolume.GetName()}"
            else:
                job.state, job.message = "failed", explainFailure(code, job.log)
        except Exception as e:  # import problems are reported like child failures
            job.state, job.message = "failed", f"Could not import the result: {e}"
        finally:
            if not job.keepFiles:
                shutil.rmtree(job.workDir, ignore_errors=True)
        return True

    @staticmethod
    def _importDoubt(job: SegmentJob) -> None:
        """The doubt map and score that the child's answer names (`dtc serve`: "doubt" of the answer)."""
        from .Doubt import loadDoubtMap

        answered = (job.request.answer.get("doubt") or [{}])[0]
        if not answered.get("doubt"):
            raise RuntimeError("the doubt map was asked for, but the answer names none")
        job.doubtNode = loadDoubtMap(answered["doubt"], job.inputVolume)
        job.doubtScore = answered.get("doubt_score")

    def cancel(self, job: SegmentJob) -> None:
        if not job.finished:
            job.state, job.message = "cancelled", "Segmentation cancelled"
            self.server.stop()  # a segmentation cannot stop half way; a new child starts in seconds
            shutil.rmtree(job.workDir, ignore_errors=True)

    def segment(self, inputVolume, model, segmentationNode=None, roi=None,
                params: Optional[SegmentParameters] = None, timeout: Optional[float] = None) -> SegmentJob:
        """Blocking version of start + poll (batch use). Raises RuntimeError when the child fails."""
        job = self.start(inputVolume, model, segmentationNode, roi, params)
        started = time.monotonic()
        while not self.poll(job):
            if timeout is not None and time.monotonic() - started > timeout:
                self.cancel(job)
                raise TimeoutError(f"segmentation did not finish within {timeout} s")
            time.sleep(0.05)
        if job.state != "done":
            raise RuntimeError(job.message + "\n" + "\n".join(job.log[-15:]))
        return job


def addToTrainingSet(state, volume, segmentationNode, segmentId: Optional[str] = None) -> None:
    """Human in the loop: put a (corrected) result into the labeled pairs of a ModuleState, replacing an
    earlier pair of the same volume and taking the volume out of the unlabeled list."""
    from .Parameters import LabeledPair
    from .SceneIO import findResultSegment

    segmentId = segmentId or findResultSegment(segmentationNode)
    state.pairs = [p for p in state.pairs if p.volume is not volume]
    state.pairs.append(LabeledPair(volume, segmentationNode, segmentId))
    state.unlabeled = [v for v in state.unlabeled if v is not volume]
