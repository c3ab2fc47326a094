"""Checks on the training inputs before anything starts. Every problem is reported (the widget lists
them in the Train button's tooltip); notes describe what will be done about harmless differences."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .Parameters import LabeledPair, TrainingParameters
from .SceneIO import isScalarVolume, labelChoices, sameGeometry, segmentationMatchesVolume


@dataclass
class Report:
    problems: list = field(default_factory=list)  # block training
    notes: list = field(default_factory=list)  # shown, do not block

    @property
    def ok(self) -> bool:
        return not self.problems

    def tooltip(self) -> str:
        lines = []
        if self.problems:
            lines.append("Cannot train yet:")
            lines += [f"  - {p}" for p in self.problems]
        if self.notes:
            lines.append("Notes:")
            lines += [f"  - {n}" for n in self.notes]
        return "\n".join(lines)


def _name(node) -> str:
    return node.GetName() if node is not None else "(none)"


def _volumeProblem(volume, what: str) -> str | None:
    if volume is None:
        return f"{what}: no volume chosen"
    if not isScalarVolume(volume):
        kind = volume.GetClassName()
        return f"{what}: {_name(volume)} is not a scalar volume ({kind}); DTC needs one grey-value channel"
    if volume.GetParentTransformNode() is not None:
        return f"{what}: {_name(volume)} is under a transform; harden the transform first"
    return None


def checkTrainingInputs(pairs: list[LabeledPair], unlabeled: list, params: TrainingParameters | None = None) -> Report:
    report = Report()
    if not pairs:
        report.problems.append("no labeled pair: add at least one volume with its segmentation or labelmap")
    seen = {}
    for row, pair in enumerate(pairs, 1):
        what = f"labeled row {row}"
        problem = _volumeProblem(pair.volume, what)
        if problem:
            report.problems.append(problem)
        if pair.volume is not None:
            if pair.volume.GetID() in seen:
                report.problems.append(f"{what}: {_name(pair.volume)} is already labeled in row {seen[pair.volume.GetID()]}")
            seen.setdefault(pair.volume.GetID(), row)
        label = pair.label
        if label is None:
            report.problems.append(f"{what}: no segmentation or labelmap chosen for {_name(pair.volume)}")
            continue
        if label.IsA("vtkMRMLScalarVolumeNode") and not label.IsA("vtkMRMLLabelMapVolumeNode"):
            report.problems.append(f"{what}: {_name(label)} is a scalar volume, not a labelmap or segmentation")
            continue
        if label.IsA("vtkMRMLLabelMapVolumeNode") and label.GetParentTransformNode() is not None:
            # a labelmap is exported in its own coordinates (a segmentation's transform is applied)
            report.problems.append(f"{what}: {_name(label)} is under a transform; harden the transform first")
        choices = labelChoices(label)
        if not choices:
            kind = "segment" if label.IsA("vtkMRMLSegmentationNode") else "non-zero label"
            report.problems.append(f"{what}: {_name(label)} has no {kind}")
        elif pair.segment is None and len(choices) > 1:
            report.problems.append(f"{what}: {_name(label)} has {len(choices)} segments "
                                   f"({', '.join(c.name for c in choices)}); choose the left atrium")
        elif pair.segment is not None and pair.segment not in {c.key for c in choices}:
            report.problems.append(f"{what}: {_name(label)} has no segment {pair.segment!r}")
        if pair.volume is not None and isScalarVolume(pair.volume):
            if label.IsA("vtkMRMLSegmentationNode"):
                differs = not segmentationMatchesVolume(label, pair.volume)
            else:
                differs = label.GetImageData() is None or not sameGeometry(label, pair.volume)
            if differs:
                report.notes.append(f"{what}: {_name(label)} has another geometry than {_name(pair.volume)}; "
                                    "it will be exported on the volume's grid")
    for volume in unlabeled:
        what = "unlabeled volume"
        problem = _volumeProblem(volume, what)
        if problem:
            report.problems.append(problem)
        elif volume.GetID() in seen:
            report.problems.append(f"{_name(volume)} is both labeled (row {seen[volume.GetID()]}) and unlabeled; "
                                   "uncheck it in the unlabeled list")
    if params is not None:
        parameterProblems = params.problems()
        report.problems += parameterProblems
        items = params.labeledBatch + (params.unlabeledBatch if unlabeled else 0)
        if not parameterProblems and items * math.prod(
                int(p) // 16 for p in params.patchSize) < 2:  # dtc train would refuse it; say so before Train
            report.problems.append(f"patch size {tuple(params.patchSize)} with one item per batch leaves batch norm "
                                   "one value per channel at the network's deepest level: use a larger patch or batch")
        if params.precision == "bf16" and not str(params.device).startswith("cuda"):
            report.notes.append("bf16 on the CPU is fast only where the CPU has bf16 instructions (Check reports "
                                "\"bf16: native\"); elsewhere it is emulated and many times slower than fp32")
    if pairs and not unlabeled:
        report.notes.append("no unlabeled volume: training is then purely supervised")
    return report
