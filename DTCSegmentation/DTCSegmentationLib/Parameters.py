"""The module's parameters: typed dataclasses stored in the module's `vtkMRMLScriptedModuleNode`.

Why not `slicer.parameterNodeWrapper`: it needs Slicer's Qt application and does not exist under the
`slicer-core` wheel, where the logic, the batch script and the tests run too; and it has no GUI connector
for the two inputs that matter most here (the labeled-pairs table and the checkable list of unlabeled
volumes). So the parameters are plain dataclasses with the same role: typed fields with defaults and
ranges, saved in the scene (scene files keep them; node references keep the chosen nodes), read by the
logic, and bound to the GUI by the widget through one name->widget table (`ParameterWidgets.py`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Optional

DEVICES = ("auto", "cpu", "cuda")
ORIENTATION_COUNTS = (1, 2, 4, 8)  # dtc infer --tta
WINDOW_SIZES = ("patch", "volume")  # dtc infer --window-size
MODES = ("fast", "official")  # dtc infer --mode
PRECISIONS = ("auto", "fp32", "fp16", "int8")  # dtc infer --precision
RECIPES = ("default", "paper")  # dtc train --recipe
TRAINING_PRECISIONS = {"auto": "auto", "fp32": "off", "bf16": "bf16"}  # the panel's name -> dtc train --amp


def _deviceProblems(device: str) -> list[str]:
    if device in DEVICES or str(device).startswith("cuda:"):
        return []
    return [f"device {device!r} is not one of {', '.join(DEVICES)} or cuda:N"]


@dataclass
class TrainingParameters:
    """Hyperparameters handed to `dtc train` (names follow its options)."""
    recipe: str = "default"  # default: the official method plus augmentation and the poly lr decay | paper
    iterations: int = 6000
    labeledBatch: int = 2
    unlabeledBatch: int = 2
    patchSize: tuple = (112, 112, 80)
    learningRate: float = 0.01
    k: float = 1500.0
    nFilters: int = 16
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 on CUDA GPUs that compute it natively, float32 elsewhere | fp32 | bf16
    valFraction: float = 0.2
    valEvery: int = 200
    checkpointEvery: int = 200
    seed: int = 1337
    workers: int = 0  # >0 uses multiprocessing, which hangs under PythonSlicer on Windows/macOS
    spacing: Optional[tuple] = None
    startFrom: str = ""  # "": a new network; else a model (store name or file) to fine-tune (dtc train --init)

    RANGES = {"iterations": (1, 1_000_000), "labeledBatch": (1, 64), "unlabeledBatch": (0, 64),
              "learningRate": (1e-6, 1.0), "k": (1.0, 1e6), "nFilters": (1, 64), "valFraction": (0.0, 0.9),
              "valEvery": (0, 1_000_000), "checkpointEvery": (1, 1_000_000), "workers": (0, 64)}

    def problems(self) -> list[str]:
        out = []
        for name, (lo, hi) in self.RANGES.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                out.append(f"{name} = {value} is outside [{lo}, {hi}]")
        if len(self.patchSize) != 3 or any(int(p) < 8 for p in self.patchSize):
            out.append(f"patch size {tuple(self.patchSize)} needs three sizes of at least 8 voxels")
        elif any(int(p) % 16 for p in self.patchSize):
            out.append(f"patch size {tuple(self.patchSize)}: each size must be a multiple of 16 (the V-Net "
                       "halves the patch four times)")
        if self.recipe not in RECIPES:
            out.append(f"recipe {self.recipe!r} is not one of {', '.join(RECIPES)}")
        if self.precision not in TRAINING_PRECISIONS:
            out.append(f"training precision {self.precision!r} is not one of {', '.join(TRAINING_PRECISIONS)}")
        out += _deviceProblems(self.device)
        return out

    def arguments(self) -> list[str]:
        """The `dtc train` options for these parameters (the only place they are built). Starting from a
        model, its filters, k, patch and spacing come with it (`--init`, added by TrainingLogic with the
        model's path): an `--n-filters` or `--spacing` other than the model's would be refused, and another
        patch would cost a laptop several times the model's own per step."""
        fromScratch = [] if self.startFrom else [
            "--k", repr(float(self.k)), "--n-filters", str(self.nFilters), "--patch", *map(str, self.patchSize),
            *(["--spacing", *map(str, self.spacing)] if self.spacing else [])]
        args = ["--recipe", self.recipe, "--iterations", str(self.iterations),
                "--labeled-batch", str(self.labeledBatch), "--unlabeled-batch", str(self.unlabeledBatch),
                "--lr", repr(float(self.learningRate)), *fromScratch, "--device", self.device,
                "--amp", TRAINING_PRECISIONS[self.precision],
                "--val-fraction", repr(float(self.valFraction)), "--val-every", str(self.valEvery),
                "--checkpoint-every", str(self.checkpointEvery), "--seed", str(self.seed),
                "--workers", str(self.workers)]
        return args


@dataclass
class SegmentParameters:
    """Inference options handed to `dtc infer`: the sliding-window mode, the fast mode's window size,
    memory budget and precision, the device, test-time orientation averaging, the largest-component
    clean-up."""
    device: str = "auto"
    mode: str = "fast"  # fast (few blended windows, folded batch norm) | official (the paper's window grid)
    windowSize: str = "patch"  # fast mode: patch (the training patch, most accurate) | volume (fastest)
    memoryGb: float = 0.0  # window budget for the fast mode; 0 = what the device has
    precision: str = "auto"  # fast mode: auto (fp16 on CUDA, int8 on an x86-64 CPU) | fp32 | fp16 | int8
    orientations: int = 1  # average over 1, 2, 4 or 8 training orientations (as many passes)
    largestComponent: bool = True
    uncertainty: bool = False  # also the two heads' doubt map and score (dtc infer --uncertainty)

    def problems(self) -> list[str]:
        out = []
        if self.mode not in MODES:
            out.append(f"mode {self.mode!r} is not fast or official")
        if self.windowSize not in WINDOW_SIZES:
            out.append(f"window size {self.windowSize!r} is not patch or volume")
        if self.precision not in PRECISIONS:
            out.append(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        elif self.precision in ("fp16", "int8") and self.mode == "official":
            out.append(f"{self.precision} runs in fast mode only (official mode is the fp32 reference)")
        elif self.precision == "int8" and str(self.device).startswith("cuda"):
            out.append("int8 runs on the CPU only: choose device cpu or auto")
        elif self.precision == "fp16" and self.device == "cpu":
            out.append("fp16 runs on CUDA only: choose device cuda or auto")
        out += _deviceProblems(self.device)
        if not (self.memoryGb >= 0 and math.isfinite(self.memoryGb)):
            out.append("the memory budget must be a finite number, not negative")
        if self.orientations not in ORIENTATION_COUNTS:
            out.append(f"test-time orientations {self.orientations!r} is not one of 1, 2, 4, 8")
        return out

    def arguments(self) -> list[str]:
        args = ["--mode", self.mode]
        if self.mode == "fast":
            args += ["--window-size", self.windowSize]
            if self.precision != "auto":
                args += ["--precision", self.precision]
        if self.device != "auto":
            args += ["--device", self.device]
        if self.memoryGb > 0:
            args += ["--memory-gb", repr(float(self.memoryGb))]
        if self.orientations != 1:
            args += ["--tta", str(self.orientations)]
        if self.largestComponent:
            args.append("--largest-component")
        if self.uncertainty:
            args.append("--uncertainty")
        return args


@dataclass
class LabeledPair:
    volume: object  # vtkMRMLScalarVolumeNode
    label: object  # vtkMRMLSegmentationNode or vtkMRMLLabelMapVolumeNode
    segment: Optional[str] = None  # segment ID / label value; None = the only one


@dataclass
class ModuleState:
    """Everything the panel holds, as stored in the parameter node."""
    training: TrainingParameters = field(default_factory=TrainingParameters)
    segmenting: SegmentParameters = field(default_factory=SegmentParameters)
    pairs: list = field(default_factory=list)
    unlabeled: list = field(default_factory=list)
    modelName: str = ""
    inputVolume: object = None
    outputSegmentation: object = None
    roi: object = None


_ROLES = {"volume": "dtcLabeledVolume", "label": "dtcLabeledLabel", "unlabeled": "dtcUnlabeledVolume",
          "inputVolume": "dtcInputVolume", "outputSegmentation": "dtcOutputSegmentation", "roi": "dtcROI"}


def dumpParameters(dc) -> str:
    """JSON of a parameters dataclass (tuples as lists); `loadParameters` reads it back."""
    return json.dumps({k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(dc).items()})


def loadParameters(cls, text: str):
    values = json.loads(text) if text else {}
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key in names:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def _pairCount(node) -> int:
    """Pairs saved in `node`: one segment choice (or null) is stored per pair."""
    return len(json.loads(node.GetParameter("pairSegments") or "[]"))


def saveState(node, state: ModuleState) -> None:
    """Write `state` into a `vtkMRMLScriptedModuleNode` (parameters + node references)."""
    previousPairs = _pairCount(node)
    wasModifying = node.StartModify()
    try:
        node.SetParameter("training", dumpParameters(state.training))
        node.SetParameter("segmenting", dumpParameters(state.segmenting))
        node.SetParameter("modelName", state.modelName or "")
        node.SetParameter("pairSegments", json.dumps([p.segment for p in state.pairs]))
        # One reference role per pair and side: a row without a volume, or a node deleted from the scene,
        # leaves a gap instead of shifting the later pairs onto another pair's label.
        for i in range(previousPairs):
            node.RemoveNodeReferenceIDs(f"{_ROLES['volume']}{i}")
            node.RemoveNodeReferenceIDs(f"{_ROLES['label']}{i}")
        node.RemoveNodeReferenceIDs(_ROLES["unlabeled"])
        for i, pair in enumerate(state.pairs):
            for role, member in (("volume", pair.volume), ("label", pair.label)):
                node.SetNodeReferenceID(f"{_ROLES[role]}{i}", member.GetID() if member is not None else None)
        for volume in state.unlabeled:
            node.AddNodeReferenceID(_ROLES["unlabeled"], volume.GetID())
        for name in ("inputVolume", "outputSegmentation", "roi"):
            value = getattr(state, name)
            node.SetNodeReferenceID(_ROLES[name], value.GetID() if value is not None else None)
    finally:
        node.EndModify(wasModifying)


def loadState(node) -> ModuleState:
    state = ModuleState(training=loadParameters(TrainingParameters, node.GetParameter("training")),
                        segmenting=loadParameters(SegmentParameters, node.GetParameter("segmenting")),
                        modelName=node.GetParameter("modelName") or "")
    segments = json.loads(node.GetParameter("pairSegments") or "[]")
    for i, segment in enumerate(segments):
        state.pairs.append(LabeledPair(node.GetNodeReference(f"{_ROLES['volume']}{i}"),
                                       node.GetNodeReference(f"{_ROLES['label']}{i}"), segment))
    for i in range(node.GetNumberOfNodeReferences(_ROLES["unlabeled"])):
        volume = node.GetNthNodeReference(_ROLES["unlabeled"], i)
        if volume is not None:
            state.unlabeled.append(volume)
    for name in ("inputVolume", "outputSegmentation", "roi"):
        setattr(state, name, node.GetNodeReference(_ROLES[name]))
    return state
