"""Where the model doubts, in the scene: the doubt map that `dtc infer --uncertainty` writes beside a label
(|sigmoid(seg) - sigmoid(-k levelset)|, float in [0, 1]: where the two heads disagree) loaded as a scalar
volume node "<scan> doubt", and shown as a colour overlay over the scan in the slice views (the foreground
layer of every slice view, half transparent, Slicer's heat table "Iron", voxels of little doubt left
transparent). Without Qt: the slice views are their `vtkMRMLSliceCompositeNode`s, as `slicer.util.
setSliceViewerLayers` sets them, so the same code runs under slicer-core.

    node = loadDoubtMap("result-doubt.nrrd", volumeNode)   # a second call for the same scan updates the node
    showDoubt(volumeNode, node)                             # or showDoubt(volumeNode, None) to take it away
"""
from __future__ import annotations

import os
from typing import Optional

import vtk

from .SceneIO import readVolume

DOUBT_REFERENCE = "dtcDoubtMap"  # the scan's node reference to its doubt map (a new Segment updates that node)
COLOR_NODE = "vtkMRMLColorTableNodeIron"  # Slicer's heat table: black, red, yellow, white
OPACITY = 0.5  # of the foreground layer
WINDOW = (0.0, 0.5)  # doubt 0.5 and above at the top of the table: the heads disagree at least that much
SHOWN_FROM = 0.05  # voxels of less doubt stay transparent, so that the scan shows through unchanged


def doubtNodeName(volume) -> str:
    return f"{volume.GetName()} doubt"


def doubtNodeOf(volume):
    """The doubt map an earlier Segment loaded for `volume`, or None."""
    return volume.GetNodeReference(DOUBT_REFERENCE)


def loadDoubtMap(path: str | os.PathLike, volume, node=None):
    """Load the doubt map file `path` of `volume` into `node`, else into the scan's earlier doubt map, else
    into a new scalar volume node "<scan> doubt"; under the scan's transform, with the overlay's display.
    The node keeps no storage node pointing at the (temporary) file: saving the scene writes its own."""
    mrmlScene = volume.GetScene()
    source = readVolume(path, "dtc-doubt-read", mrmlScene=mrmlScene)
    try:
        node = node or doubtNodeOf(volume)
        if node is None or node.GetScene() is not mrmlScene:
            node = mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", doubtNodeName(volume))
        image = vtk.vtkImageData()
        image.DeepCopy(source.GetImageData())
        node.SetAndObserveImageData(image)
        node.CopyOrientation(source)  # a doubt map has its label's grid: the scan's, or its ROI crop's
    finally:
        storage = source.GetStorageNode()
        mrmlScene.RemoveNode(source)
        if storage is not None:
            mrmlScene.RemoveNode(storage)
    node.SetAndObserveTransformNodeID(volume.GetTransformNodeID())  # written in the scan's own coordinates
    volume.SetNodeReferenceID(DOUBT_REFERENCE, node.GetID())
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(COLOR_NODE)
    display.SetAutoWindowLevel(0)
    display.SetWindowLevelMinMax(*WINDOW)
    display.SetAutoThreshold(0)
    display.SetLowerThreshold(SHOWN_FROM)
    display.SetUpperThreshold(1.0)
    display.SetApplyThreshold(1)
    return node


def sliceViews(mrmlScene) -> list:
    """The slice views' composite nodes (background, foreground, label layers)."""
    return [mrmlScene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            for i in range(mrmlScene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]


def showDoubt(volume, doubtNode: Optional[object], opacity: float = OPACITY) -> None:
    """Show `volume` in every slice view with `doubtNode` over it as the foreground layer; with no doubt
    node, take away an overlay of this scan's doubt map (it belongs to a result that a new one replaces)."""
    earlier = doubtNodeOf(volume)
    for view in sliceViews(volume.GetScene()):
        view.SetBackgroundVolumeID(volume.GetID())
        if doubtNode is not None:
            view.SetForegroundVolumeID(doubtNode.GetID())
            view.SetForegroundOpacity(opacity)
        elif earlier is not None and view.GetForegroundVolumeID() == earlier.GetID():
            view.SetForegroundVolumeID(None)
