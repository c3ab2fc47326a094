"""The module panel (DTCSegmentationLib/Widget.py) driven as a user would: its real code, the real .ui
file, real MRML (slicer-core), a real `dtc train` and `dtc infer` child, a real model store; only Slicer's Qt
GUI is a stand-in (qt_stand_in.py: no Slicer GUI exists on these machines)."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import types

import numpy as np
import pytest
import slicer
from conftest import MODULE_DIR, PANEL_MODULES, addVolume, offlinePip, phantom
from qt_stand_in import Answers, activate, install

UI = MODULE_DIR / "Resources" / "UI" / "DTCSegmentation.ui"
PANEL_IMPORTS = [f"DTCSegmentationLib.{name}" for name in PANEL_MODULES]


class PanelLogic:
    """DTCSegmentation.py's logic facade (that file needs Slicer's application): the same three logic
    objects and the state kept in a scripted-module node of the scene."""

    def __init__(self, root):
        from DTCSegmentationLib.InferenceLogic import InferenceLogic
        from DTCSegmentationLib.ModelStore import ModelStore
        from DTCSegmentationLib.TrainingLogic import TrainingLogic

        self.store = ModelStore(root / "models")
        self.training = TrainingLogic(workRoot=root / "work", store=self.store)
        self.inference = InferenceLogic(store=self.store)

    def _node(self):
        node = slicer.mrmlScene.GetFirstNodeByName("DTCSegmentation")
        return node or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "DTCSegmentation")

    def state(self):
        from DTCSegmentationLib.Parameters import loadState

        return loadState(self._node())

    def saveState(self, state):
        from DTCSegmentationLib.Parameters import saveState

        saveState(self._node(), state)


@pytest.fixture
def gui(scene, monkeypatch, tmp_path):
    answers = Answers()
    install(monkeypatch, answers, slicerHome=str(tmp_path / "no-slicer-home"))
    for module in PANEL_IMPORTS:  # import them with the stand-ins
        monkeypatch.delitem(sys.modules, module, raising=False)
    from DTCSegmentationLib.Widget import DTCPanel

    panels = []

    def open_panel():
        panels.append(DTCPanel(str(UI), types.SimpleNamespace(addWidget=lambda widget: None), PanelLogic(tmp_path)))
        return panels[-1]

    yield types.SimpleNamespace(open=open_panel, answers=answers)
    for panel in panels:  # as Slicer does on exit: stops the timer, drops the observers, ends the children
        panel.cleanup()
    for module in PANEL_IMPORTS:
        monkeypatch.delitem(sys.modules, module, raising=False)


def wait(panel, done, timeout=180):
    """Run the panel's timer, as Slicer's event loop would, until `done()`."""
    end = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < end, "timed out"
        assert panel.timer.active, "the panel stopped following a job that has not ended"
        panel.onTimer()
        time.sleep(0.2)


def panelWithOnePair(gui, scene):
    """A panel over a scene with one phantom and its labelmap, chosen as the first labeled pair."""
    image, label = phantom(0, size=(24, 24, 24))
    volume, labelmap = addVolume(scene, image, "case"), addVolume(scene, label, "case-label", labelmap=True)
    panel = gui.open()
    choosePair(panel, volume, labelmap)
    return panel, volume, labelmap


def setTinyTraining(ui, iterations):
    """What a user would type for a quick run: few iterations of a small network on 16^3 patches."""
    ui.iterationsSpinBox.value = iterations
    for name in ("patchXSpinBox", "patchYSpinBox", "patchZSpinBox"):
        getattr(ui, name).value = 16
    ui.nFiltersSpinBox.value = 4
    ui.valFractionSpinBox.value = 0


def choosePair(panel, volume, label):
    panel.ui.addPairButton.click()
    volumeCombo, labelCombo, segmentCombo = panel.pairsTable.rows[-1]
    volumeCombo.setCurrentNode(volume)
    labelCombo.setCurrentNode(label)
    return segmentCombo


def test_train_then_segment_then_add_the_result_to_the_labeled_set(gui, scene, tmp_path):
    volumes, labels = [], []
    for i in range(2):
        image, label = phantom(i, size=(24, 24, 24))
        volumes.append(addVolume(scene, image, f"case{i}"))
        labels.append(addVolume(scene, label, f"case{i}-label", labelmap=True))
    unlabeled = addVolume(scene, phantom(5, size=(24, 24, 24))[0], "unlabeled")
    panel = gui.open()
    ui = panel.ui
    assert not ui.trainButton.enabled and "labeled" in ui.trainButton.toolTip
    assert not ui.segmentButton.enabled and "no model" in ui.segmentButton.toolTip

    for volume, label in zip(volumes, labels):
        segments = choosePair(panel, volume, label)
        assert segments.count == 2 and segments.currentIndex == 1  # one label value: chosen for the user
    ui.unlabeledSelector.setCheckState(unlabeled, 2)
    setTinyTraining(ui, iterations=3)
    ui.modelNameLineEdit.text = "panel-model"
    saved = panel.logic.state()  # every edit reached the parameter node
    assert [(p.volume, p.label) for p in saved.pairs] == list(zip(volumes, labels))
    assert saved.unlabeled == [unlabeled] and saved.training.iterations == 3
    assert saved.training.patchSize == (16, 16, 16)
    assert ui.trainButton.enabled, ui.trainButton.toolTip

    ui.trainButton.click()
    assert not ui.addPairButton.enabled and not ui.trainButton.enabled  # a running job's inputs are locked
    wait(panel, lambda: panel.training.job.finished)
    assert panel.training.job.state == "done", f"{panel.training.job.message} {gui.answers.errors}"
    assert "Added to the model store as 'panel-model'" in ui.trainingStatusLabel.text
    assert ui.trainingProgressBar.value == 100 and "iteration" in ui.logTextEdit.plainText.lower()
    plot = panel.training.plot  # shown as Slicer shows a chart: through a plot view node given to the widget
    assert plot is not None and ui.plotWidget.mrmlPlotViewNode().GetPlotChartNodeID() == plot.chart.GetID()
    assert plot.lossTable.GetTable().GetNumberOfRows() > 0
    assert ui.modelComboBox.currentText == "panel-model" and ui.modelsTable.rowCount == 1
    assert ui.addPairButton.enabled and ui.trainButton.enabled

    ui.inputVolumeSelector.setCurrentNode(unlabeled)
    ui.outputSegmentationSelector.setCurrentNode(None)
    assert ui.segmentButton.enabled, ui.segmentButton.toolTip
    ui.segmentButton.click()
    wait(panel, lambda: panel.segmentJob.finished)
    assert panel.segmentJob.state == "done", panel.segmentJob.message
    result = ui.outputSegmentationSelector.currentNode()
    assert result is panel.segmentJob.segmentationNode and ui.show3DButton.segmentationNode() is result
    assert result.GetSegmentation().GetSegment(panel.segmentJob.segmentId).GetName() == "Left atrium"
    assert not panel.timer.active  # nothing left to follow

    ui.addToTrainingButton.click()  # the human-in-the-loop step: the corrected result becomes a labeled pair
    state = panel.logic.state()
    assert (state.pairs[-1].volume, state.pairs[-1].label) == (unlabeled, result) and unlabeled not in state.unlabeled
    assert len(panel.pairsTable.rows) == 3 and not ui.trainCollapsibleButton.collapsed
    assert gui.answers.errors == []


def test_one_inference_child_started_on_entering_serves_every_click_and_ends_with_the_panel(gui, scene, tinyModel):
    volumes = [addVolume(scene, phantom(i, size=(24, 24, 24))[0], f"scan{i}") for i in range(2)]
    panel = gui.open()
    server = panel.logic.inference.server
    panel.enter()
    assert server.process is None  # no model to segment with: nothing started
    panel.logic.store.importModel(tinyModel, "la")
    panel.models.refresh()
    panel.enter()
    assert server.running  # started ahead of the first click, and loading the chosen model
    assert server.preloaded.body["load"] == {"model": str(panel.logic.store.get("la").path), "device": "auto",
                                             "precision": "auto", "mode": "fast"}
    assert panel.ui.segmentStatusLabel.text == "Loading model 'la'..." and panel.timer.active
    wait(panel, lambda: panel.modelLoad is None)
    assert panel.ui.segmentStatusLabel.text == "Model 'la' loaded: ready to segment."
    assert not panel.timer.active
    panel.logic.store.importModel(tinyModel, "la-copy")
    panel.models.refresh()
    activate(panel.ui.modelComboBox, panel.ui.modelComboBox.findText("la-copy"))  # the user picks another model
    assert server.preloaded.body["load"]["model"] == str(panel.logic.store.get("la-copy").path)
    wait(panel, lambda: panel.modelLoad is None)
    assert panel.ui.segmentStatusLabel.text == "Model 'la-copy' loaded: ready to segment."
    child = server.process.pid
    for volume in volumes:
        panel.ui.inputVolumeSelector.setCurrentNode(volume)
        panel.ui.outputSegmentationSelector.setCurrentNode(None)
        panel.ui.segmentButton.click()
        wait(panel, lambda: panel.segmentJob.finished)
        assert panel.segmentJob.state == "done", panel.segmentJob.message + "\n".join(panel.segmentJob.log)
        assert panel.segmentJob.segmentationNode.GetName() == f"{volume.GetName()} segmentation"
        assert server.process.pid == child  # the same warm child
    panel.cleanup()  # as when Slicer closes
    assert server.process is None
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_models_are_renamed_exported_and_deleted_from_the_panel(gui, tinyModel, tmp_path):
    panel = gui.open()
    ui = panel.ui
    gui.answers.openFile = str(tinyModel)
    ui.importModelButton.click()
    assert ui.modelsTable.rowCount == 1 and ui.modelComboBox.currentText == ui.modelsTable.item(0, 0).text()
    ui.modelsTable.setCurrentCell(0, 0)
    gui.answers.text = "renamed"
    ui.renameModelButton.click()
    assert ui.modelsTable.item(0, 0).text() == "renamed" and ui.modelComboBox.currentText == "renamed"
    gui.answers.saveFile = str(tmp_path / "exported.pt")
    ui.exportModelButton.click()
    assert (tmp_path / "exported.pt").read_bytes() == panel.logic.store.get("renamed").path.read_bytes()
    gui.answers.confirm = False
    ui.deleteModelButton.click()
    assert ui.modelsTable.rowCount == 1  # the user said no
    gui.answers.confirm = True
    ui.deleteModelButton.click()
    assert ui.modelsTable.rowCount == 0 and ui.modelComboBox.count == 0
    assert "no model" in ui.segmentButton.toolTip

    (tmp_path / "junk.pt").write_bytes(b"not a model")
    gui.answers.openFile = str(tmp_path / "junk.pt")
    ui.importModelButton.click()
    assert len(gui.answers.errors) == 1 and gui.answers.errors[0].startswith("Model refused")
    assert "junk.pt" in gui.answers.errors[0] and ui.modelsTable.rowCount == 0


def test_the_scene_keeps_the_panel_settings_and_a_closed_scene_clears_them(gui, scene):
    panel, volume, labelmap = panelWithOnePair(gui, scene)
    ui = panel.ui
    ui.precisionComboBox.setCurrentText("fp32")
    ui.orientationsComboBox.setCurrentText("4")
    ui.largestComponentCheckBox.checked = True
    reopened = gui.open()  # a second panel on the same scene reads what the first saved
    assert reopened.ui.precisionComboBox.currentText == "fp32" and reopened.ui.orientationsComboBox.currentText == "4"
    assert reopened.ui.largestComponentCheckBox.checked
    assert [(c[0].currentNode(), c[1].currentNode()) for c in reopened.pairsTable.rows] == [(volume, labelmap)]
    reopened.ui.removePairButton.click()  # no row chosen: nothing removed
    assert len(reopened.pairsTable.rows) == 1
    reopened.ui.labeledTable.setCurrentCell(0, 0)
    reopened.ui.removePairButton.click()
    assert reopened.pairsTable.rows == [] and reopened.ui.labeledTable.rowCount == 0 and panel.logic.state().pairs == []
    scene.Clear(0)
    scene.InvokeEvent(scene.EndCloseEvent)
    assert panel.pairsTable.rows == [] and ui.labeledTable.rowCount == 0
    assert ui.precisionComboBox.currentText == "auto"  # a new scene starts from the defaults


def test_bad_choices_are_explained_on_the_disabled_buttons(gui, scene):
    image, _ = phantom(0, size=(24, 24, 24))
    volume = addVolume(scene, image, "case")
    blank = addVolume(scene, np.zeros((24, 24, 24), np.uint8), "blank-label", labelmap=True)
    panel = gui.open()
    ui = panel.ui
    choosePair(panel, volume, blank)
    ui.precisionComboBox.setCurrentText("fp16")
    ui.segmentDeviceComboBox.setCurrentText("cpu")
    assert not ui.trainButton.enabled and "blank-label" in ui.trainButton.toolTip
    assert not ui.segmentButton.enabled and "fp16" in ui.segmentButton.toolTip


def test_stop_saves_a_checkpoint_and_resume_finishes_with_the_settings_changed_meanwhile(gui, scene):
    panel, _, _ = panelWithOnePair(gui, scene)
    ui = panel.ui
    setTinyTraining(ui, iterations=100000)  # far more than the test will wait for
    ui.trainButton.click()
    wait(panel, lambda: panel.training.job.monitor.fraction > 0)
    assert ui.stopButton.enabled and not ui.resumeButton.enabled
    ui.stopButton.click()
    assert "Stopping" in ui.trainingStatusLabel.text and not ui.stopButton.enabled
    wait(panel, lambda: panel.training.job.finished)
    job = panel.training.job
    assert job.state == "stopped" and ui.resumeButton.enabled and ui.trainButton.enabled
    stoppedAt = job.monitor.iteration
    logLines = ui.logTextEdit.plainText.count("\n")
    ui.iterationsSpinBox.value = stoppedAt + 2  # the user shortens the run before resuming it
    ui.trainingPrecisionComboBox.setCurrentText("fp32")  # and pins the precision (auto before)
    ui.resumeButton.click()
    wait(panel, lambda: panel.training.job.finished)
    assert job.state == "done", job.message
    assert json.loads((job.outDir / "train_config.json").read_text())["config"]["amp"] == "off"
    assert job.monitor.iteration == stoppedAt + 2 and ui.modelsTable.rowCount == 1
    assert ui.logTextEdit.plainText.count("\n") > logLines  # the log goes on where it was, not from the start
    assert gui.answers.errors == []


def test_the_next_session_offers_the_run_that_slicer_left_unfinished(gui, scene):
    panel, _, _ = panelWithOnePair(gui, scene)
    setTinyTraining(panel.ui, iterations=100000)
    panel.ui.trainButton.click()
    wait(panel, lambda: panel.training.job.monitor.fraction > 0)
    panel.cleanup()  # Slicer closes while it trains: a tiny iteration is short, so the trainer saves where it is
    job = panel.training.job
    stoppedAt = job.monitor.stoppedAt
    assert job.state == "stopped" and job.process.poll() is not None and stoppedAt, job.logTail()
    scene.Clear(0)  # and starts again with an empty scene, the panel's defaults in it
    later = gui.open()
    ui = later.ui
    assert f"checkpoint at iteration {stoppedAt} of 100000" in ui.trainingStatusLabel.text
    assert ui.resumeButton.enabled and ui.trainButton.enabled is False  # no labeled pair in the new scene
    assert (ui.iterationsSpinBox.value, ui.nFiltersSpinBox.value) == (100000, 4)  # the run's own parameters
    ui.iterationsSpinBox.value = stoppedAt + 2
    ui.resumeButton.click()
    wait(later, lambda: later.training.job.finished)
    assert later.training.job.state == "done", later.training.job.message
    assert ui.modelsTable.rowCount == 1 and gui.answers.errors == []
    assert later.logic.training.unfinishedRuns() == []


def test_dependency_check_reports_the_training_python_devices_and_copies_the_report(gui):
    panel = gui.open()
    ui = panel.ui
    ui.checkDependenciesButton.click()
    assert "torch" in ui.dependencyStatusLabel.text and panel.dependencies.deviceCheck is not None
    wait(panel, lambda: panel.dependencies.deviceCheck is None, timeout=120)
    assert "cpu" in ui.dependencyStatusLabel.text.lower()
    ui.copyReportButton.click()
    assert gui.answers.clipboard.text() == ui.dependencyStatusLabel.text


def test_entering_with_a_package_missing_starts_no_child_and_a_failed_install_says_why(gui, scene, tinyModel,
                                                                                      monkeypatch):
    realFindSpec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "monai" else realFindSpec(name, *a))
    monkeypatch.setattr(slicer.util, "pip_install", offlinePip)  # real pip, without a network
    panel = gui.open()
    ui = panel.ui
    panel.logic.store.importModel(tinyModel, "la")
    panel.models.refresh()
    ui.inputVolumeSelector.setCurrentNode(addVolume(scene, phantom(0, size=(24, 24, 24))[0], "scan"))
    panel.enter()
    assert panel.logic.inference.server.process is None and panel.modelLoad is None  # no child
    assert "broken: cannot be imported" in ui.dependencyStatusLabel.text  # metadata without its files
    assert not ui.dependenciesCollapsibleButton.collapsed
    ui.segmentButton.click()  # asks to install, which fails for want of a network
    assert panel.segmentJob is None and panel.logic.inference.server.process is None
    assert len(gui.answers.errors) == 1 and gui.answers.errors[0].startswith(
        "Missing dependencies: monai>=1.3 (through pip) could not be installed: the package index could not be reached")
    assert "Some packages are missing or broken" in ui.dependencyStatusLabel.text


def test_the_self_test_steps_pass_on_the_panel(gui, scene, tmp_path):
    # DTCSegmentationTest runs these steps in Slicer on the real widgets; here the event loop is the test's
    from DTCSegmentationLib import SelfTest

    panel = gui.open()
    shown = []

    def pump():
        if panel.timer.active:
            panel.onTimer()
        time.sleep(0.2)

    SelfTest.runPanelScenario(panel, pump, tmp_path, shown.append)
    assert shown[-1] == "Self-test passed" and gui.answers.errors == []
    assert panel.training.job.state == "stopped" and SelfTest.plottedPoints(panel.ui) >= 2


def test_open_in_segment_editor_selects_the_result_and_its_volume(gui, scene):
    volume = addVolume(scene, phantom(0, size=(24, 24, 24))[0], "case")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "case segmentation")
    panel = gui.open()
    panel.ui.inputVolumeSelector.setCurrentNode(volume)
    panel.ui.outputSegmentationSelector.setCurrentNode(segmentation)
    assert panel.ui.openSegmentEditorButton.enabled
    panel.ui.openSegmentEditorButton.click()
    editor = gui.answers.segmentEditor
    assert (editor.segmentationNode(), editor.sourceVolumeNode()) == (segmentation, volume)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="fails for want of a GPU, which this machine has")
def test_a_training_that_fails_says_why_and_keeps_the_panel_usable(gui, scene):
    panel, _, _ = panelWithOnePair(gui, scene)
    ui = panel.ui
    ui.deviceComboBox.setCurrentText("cuda")  # allowed by the panel; the child finds no GPU on these machines
    ui.trainButton.click()
    wait(panel, lambda: panel.training.job.finished, timeout=120)
    assert panel.training.job.state == "failed"
    assert len(gui.answers.errors) == 1 and gui.answers.errors[0].startswith("Training failed")
    assert "cuda" in gui.answers.errors[0].lower()
    assert ui.trainButton.enabled and ui.addPairButton.enabled and not ui.resumeButton.enabled  # no checkpoint
