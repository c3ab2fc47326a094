"""The steps of the module's self-test (DTCSegmentationTest: Reload and Test, ctest), written against the
panel as a user drives it, so that the same steps run in Slicer on the real widgets and in the pytest suite
on the stand-ins (Testing/Python/test_panel.py): a generated phantom and a small model made here; Segment
gives the "Left atrium" segment; a short training starts, plots points, and stops with a checkpoint.
No Qt here: the caller passes `pump`, one turn of its event loop."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import slicer

from .SceneIO import LEFT_ATRIUM_NAME

MODEL_NAME = "self-test"


def addPhantom(scene, name: str = "phantom", size=(32, 32, 32), seed: int = 0):
    """A left-atrium-like scan and its label from the backend's phantom generator: a volume and a labelmap."""
    from dtc_training.phantoms import make_phantom

    image, label = make_phantom(np.random.default_rng(seed), size=size)
    nodes = []
    for array, cls, suffix in ((image.astype(np.float32), "vtkMRMLScalarVolumeNode", ""),
                               (label.astype(np.uint8), "vtkMRMLLabelMapVolumeNode", "-label")):
        node = scene.AddNewNodeByClass(cls, name + suffix)
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array.transpose(2, 1, 0)))  # (k, j, i)
        node.CreateDefaultDisplayNodes()
        nodes.append(node)
    return tuple(nodes)


def writeSmallModel(folder) -> Path:
    """An untrained DTC model (4 filters, 16^3 patches): quick to make and to run, and a model file like any."""
    import torch
    from dtc_training.model import DualTaskVNet
    from dtc_training.model_io import save_model

    torch.manual_seed(0)
    metadata = {"n_filters": 4, "in_channels": 1, "patch_size": [16, 16, 16], "spacing": None,
                "normalization": "zscore", "k": 1500.0, "label_name": LEFT_ATRIUM_NAME, "data": {"source": "self-test"}}
    return save_model(Path(folder) / "model.safetensors", DualTaskVNet(in_channels=1, n_filters=4), metadata)


def waitFor(condition: Callable[[], bool], pump: Callable[[], None], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        pump()


def plottedPoints(ui) -> int:
    """The loss points in the chart that the plot widget shows, read through its plot view node."""
    view = ui.plotWidget.mrmlPlotViewNode()
    chart = slicer.mrmlScene.GetNodeByID(view.GetPlotChartNodeID()) if view is not None else None
    if chart is None or chart.GetNumberOfPlotSeriesNodes() == 0:
        return 0
    return chart.GetNthPlotSeriesNode(0).GetTableNode().GetTable().GetNumberOfRows()


def runPanelScenario(panel, pump: Callable[[], None], folder, log: Callable[[str], None] = print) -> None:
    """Segment a phantom with a small model, then train on it briefly and stop; AssertionError on a failure."""
    ui, scene = panel.ui, slicer.mrmlScene
    log("Making a phantom and a small model")
    volume, label = addPhantom(scene)
    panel.logic.store.importModel(writeSmallModel(folder), MODEL_NAME)
    panel.models.refresh(select=MODEL_NAME)

    log("Segmenting the phantom")
    ui.inputVolumeSelector.setCurrentNode(volume)
    ui.outputSegmentationSelector.setCurrentNode(None)
    assert ui.segmentButton.enabled, ui.segmentButton.toolTip
    ui.segmentButton.click()
    waitFor(lambda: ui.segmentButton.enabled, pump, 300, "segmentation")
    segmentation = ui.outputSegmentationSelector.currentNode()
    assert segmentation is not None, ui.segmentStatusLabel.text
    segment = segmentation.GetSegmentation().GetSegment(segmentation.GetSegmentation().GetSegmentIdBySegmentName(
        LEFT_ATRIUM_NAME))
    assert segment is not None, f"no '{LEFT_ATRIUM_NAME}' segment: {ui.segmentStatusLabel.text}"

    log("Training on the phantom, then stopping")
    ui.addPairButton.click()
    row = ui.labeledTable.rowCount - 1
    ui.labeledTable.cellWidget(row, 0).setCurrentNode(volume)
    ui.labeledTable.cellWidget(row, 1).setCurrentNode(label)
    ui.iterationsSpinBox.value = 100000  # far more than it will run
    for spinBox in (ui.patchXSpinBox, ui.patchYSpinBox, ui.patchZSpinBox):
        spinBox.value = 16
    ui.nFiltersSpinBox.value = 4
    ui.valFractionSpinBox.value = 0
    assert ui.trainButton.enabled, ui.trainButton.toolTip
    ui.trainButton.click()
    waitFor(lambda: plottedPoints(ui) >= 2 or ui.trainButton.enabled, pump, 600, "plotted training loss")
    assert plottedPoints(ui) >= 2, ui.trainingStatusLabel.text
    ui.stopButton.click()
    waitFor(lambda: ui.resumeButton.enabled or ui.trainButton.enabled, pump, 300, "stop")
    assert ui.resumeButton.enabled, f"not resumable after Stop: {ui.trainingStatusLabel.text}"
    log("Self-test passed")
