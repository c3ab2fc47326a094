"""DTCSegmentation: semi-supervised left-atrium segmentation with Dual-task Consistency (DTC).

This file is deliberately thin: the module description, the widget entry point and the self-test.
The logic lives in `DTCSegmentationLib/` (MRML and `slicer.util` only, no Qt at import time), so it runs
unchanged in Slicer, in `Slicer --no-main-window --python-script`, and under plain Python with the
`slicer-core` wheel; the Qt widget lives in `DTCSegmentationLib/Widget.py`.
"""
from __future__ import annotations

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)


class DTCSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DTC Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["DTCSegmentation developers (dtc-segmentation)"]
        self.parent.helpText = _(
            "Segment the left atrium in MRI with a Dual-task Consistency (DTC) network, correct it in the "
            "Segment Editor, and train your own models from labeled and unlabeled volumes in the background. "
            "See the <a href=\"https://github.com/dtc-segmentation/SlicerDTCSegmentation/blob/main/docs/slicer.md\">"
            "documentation</a>.")
        self.parent.acknowledgementText = _(
            "Dual-task Consistency: Luo, Chen, Song, Wang, Semi-supervised Medical Image Segmentation through "
            "Dual-task Consistency, AAAI 2021.")


class DTCSegmentationWidget(ScriptedLoadableModuleWidget):
    """GUI only; see DTCSegmentationLib.Widget.DTCPanel."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from DTCSegmentationLib.Widget import DTCPanel

        self.panel = DTCPanel(self.resourcePath("UI/DTCSegmentation.ui"), self.layout, DTCSegmentationLogic())
        self.layout.addStretch(1)

    def cleanup(self):
        if hasattr(self, "panel"):
            self.panel.cleanup()

    def enter(self):
        self.panel.enter()

    def exit(self):
        self.panel.exit()


class DTCSegmentationLogic(ScriptedLoadableModuleLogic):
    """Facade over the Qt-free logic classes; `getParameterNode()` gives the module's singleton
    `vtkMRMLScriptedModuleNode`, read and written through `DTCSegmentationLib.Parameters`. The model store
    and the work folder are the user's unless given (the self-test's are temporary)."""

    def __init__(self, store=None, workRoot=None):
        ScriptedLoadableModuleLogic.__init__(self)
        from DTCSegmentationLib.InferenceLogic import InferenceLogic
        from DTCSegmentationLib.ModelStore import ModelStore
        from DTCSegmentationLib.TrainingLogic import TrainingLogic

        self.store = store or ModelStore()
        self.training = TrainingLogic(workRoot=workRoot, store=self.store)
        self.inference = InferenceLogic(store=self.store)

    def state(self):
        from DTCSegmentationLib.Parameters import loadState

        return loadState(self.getParameterNode())

    def saveState(self, state):
        from DTCSegmentationLib.Parameters import saveState

        saveState(self.getParameterNode(), state)


class DTCSegmentationTest(ScriptedLoadableModuleTest):
    """Self-test (Reload and Test, ctest): the panel as a user drives it (DTCSegmentationLib.SelfTest: a
    phantom and a small model made here, Segment, a short training started and stopped, its curve), and
    scene export, validation and result import on real MRML. The pytest suite (Testing/Python) runs the
    same panel steps on stand-ins for Slicer's widgets; it needs the dependencies (the Dependencies section)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_resultImportAndValidation()
        self.setUp()
        self.test_panel()

    def test_panel(self):
        import os
        import tempfile
        import time
        from pathlib import Path

        import qt
        from DTCSegmentationLib import Dependencies, SelfTest
        from DTCSegmentationLib.ModelStore import ModelStore
        from DTCSegmentationLib.Widget import DTCPanel

        Dependencies.ensure(interactive=False)  # a missing package fails the test with its name
        uiPath = os.path.join(os.path.dirname(__file__), "Resources", "UI", "DTCSegmentation.ui")
        with tempfile.TemporaryDirectory() as folder:
            logic = DTCSegmentationLogic(store=ModelStore(Path(folder) / "models"), workRoot=Path(folder) / "work")
            container = qt.QWidget()
            panel = DTCPanel(uiPath, qt.QVBoxLayout(container), logic, showDialogs=False)
            try:
                SelfTest.runPanelScenario(panel, lambda: (slicer.app.processEvents(), time.sleep(0.05)), folder,
                                          self.delayDisplay)
            finally:
                panel.cleanup()

    def test_resultImportAndValidation(self):
        import tempfile
        from pathlib import Path

        import numpy as np

        from DTCSegmentationLib import SceneIO
        from DTCSegmentationLib.Parameters import LabeledPair
        from DTCSegmentationLib.Validation import checkTrainingInputs

        self.delayDisplay("Building a phantom")
        array = np.zeros((24, 24, 24), np.float32)
        array[8:16, 8:16, 8:16] = 100
        volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "phantom")
        slicer.util.updateVolumeFromArray(volume, array)
        volume.SetSpacing(0.8, 0.8, 1.5)
        label = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "phantom-label")
        slicer.util.updateVolumeFromArray(label, (array > 0).astype(np.uint8))
        label.CopyOrientation(volume)
        self.assertTrue(checkTrainingInputs([LabeledPair(volume, label)], []).ok)
        self.assertFalse(checkTrainingInputs([], [volume]).ok)

        with tempfile.TemporaryDirectory() as folder:
            path = SceneIO.exportLabel(label, None, volume, Path(folder) / "label.nrrd")
            seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
            segmentId = SceneIO.importResult(path, seg, volume)
        self.assertEqual(seg.GetSegmentation().GetSegment(segmentId).GetName(), "Left atrium")
        self.assertEqual(int(SceneIO.segmentArray(seg, segmentId, volume).sum()), 8 * 8 * 8)
        self.delayDisplay("Test passed")
