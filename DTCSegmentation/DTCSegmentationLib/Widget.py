"""The module panel (Qt). Imported inside Slicer by DTCSegmentation.py (and by Testing/Python/test_panel.py
over stand-ins for Slicer's Qt); all work is delegated to the Qt-free logic classes. A QTimer polls the
background jobs every 0.5 s, so the GUI never blocks.

Every edit is written to the parameter node (through ParameterWidgets' tables), and the node is read back
into the widgets when the module is entered or the scene changes. The labeled-pairs table and the Train,
Models and Dependencies sections are parts of their own (LabeledPairsTable, TrainingSection, ModelsSection,
DependenciesSection).
"""
from __future__ import annotations

import dataclasses
import logging

import ctk  # noqa: F401  (Slicer's designer widgets)
import qt
import slicer
from slicer.i18n import tr as _
from slicer.util import VTKObservationMixin

from . import Doubt
from .AdaptationSection import AdaptationSection
from .DependenciesSection import DependenciesSection
from .InferenceLogic import addToTrainingSet
from .LabeledPairsTable import LabeledPairsTable
from .ModelsSection import ModelsSection
from .ParameterWidgets import (SEGMENT_FIELDS, TRAINING_FIELDS, connectFields, readFields, readPatchSize, showFields,
                               showPatchSize)
from .Parameters import ModuleState, SegmentParameters
from .TrainingSection import TrainingSection
from .Validation import checkTrainingInputs

# the inputs of training, locked while it runs
INPUT_WIDGETS = ("labeledTable", "addPairButton", "removePairButton", "unlabeledSelector", "trainingParametersGroupBox",
                 "modelNameLineEdit", "startFromComboBox")


class DTCPanel(VTKObservationMixin):
    def __init__(self, uiPath: str, layout, logic, showDialogs: bool = True):
        VTKObservationMixin.__init__(self)
        self.logic = logic
        self.showDialogs = showDialogs and not slicer.app.commandOptions().noMainWindow
        self.uiWidget = slicer.util.loadUI(uiPath)
        layout.addWidget(self.uiWidget)
        self.ui = slicer.util.childWidgetVariables(self.uiWidget)
        self.uiWidget.setMRMLScene(slicer.mrmlScene)
        self.pairsTable = LabeledPairsTable(self.ui.labeledTable, self.onInputsChanged)
        self.models = ModelsSection(self.ui, logic.store, self.uiWidget, self.showDialogs, self._error,
                                    self.onInputsChanged, lambda: self.timer.start())
        self.segmentJob = None
        self.modelLoad = None  # (model name, load request) while the inference child loads it ahead of a click
        self._loading = False
        self.timer = qt.QTimer()
        self.timer.setInterval(500)
        self.timer.connect("timeout()", self.onTimer)
        # the inference child ends before an install, so that the next one imports what gets installed
        self.dependencies = DependenciesSection(self.ui, self.showDialogs, self._error, self.timer.start,
                                                beforeInstall=logic.inference.shutdown)
        self.training = TrainingSection(self.ui, logic, self.models, self.dependencies.ready, self.collectState,
                                        self.timer.start, self.updateButtons, self._error)
        self.adaptation = AdaptationSection(self.ui, logic, self.models, self.dependencies.ready, self.collectState,
                                            self.timer.start, self.updateButtons, self._error)
        self._connect()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        self._loading = True  # the widgets' defaults must not overwrite the parameters of a loaded scene
        try:
            self.models.refresh()
        finally:
            self._loading = False
        if self.training.reopenUnfinished() is not None:  # show the run's own parameters, which Resume passes on
            state = self.logic.state()
            state.training = self.training.job.params
            self.logic.saveState(state)
        self.loadFromParameterNode()

    # ------------------------------------------------------------------------------------ wiring
    def _connect(self):
        ui = self.ui
        connectFields(ui, self.onInputsChanged)
        for selector in (ui.inputVolumeSelector, ui.roiSelector, ui.outputSegmentationSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputsChanged)
        ui.unlabeledSelector.connect("checkedNodesChanged()", self.onInputsChanged)
        ui.modelComboBox.connect("currentTextChanged(QString)", self.onInputsChanged)
        ui.startFromComboBox.connect("currentIndexChanged(int)", self.onInputsChanged)
        ui.modelComboBox.connect("activated(int)", lambda index: self.prepareInference())  # the user's choice
        ui.outputSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", ui.show3DButton.setSegmentationNode)
        ui.addPairButton.connect("clicked()", lambda: self.pairsTable.add())
        ui.removePairButton.connect("clicked()", self.pairsTable.removeCurrent)
        ui.segmentButton.connect("clicked()", self.onSegment)
        ui.openSegmentEditorButton.connect("clicked()", self.onOpenSegmentEditor)
        ui.addToTrainingButton.connect("clicked()", self.onAddToTraining)

    def cleanup(self):
        self.timer.stop()
        self.removeObservers()
        self.training.cleanup()
        self.adaptation.cleanup()
        if self._segmenting():
            self.logic.inference.cancel(self.segmentJob)
        self.logic.inference.shutdown()
        self.dependencies.cleanup()
        self.models.cleanup()

    def enter(self):
        self.loadFromParameterNode()
        self.prepareInference()

    def prepareInference(self):
        """Have the inference child load the chosen model now: the next Segment click then finds the backend
        imported and the model loaded. With a package missing or broken, no child: the Dependencies section
        says what is missing, and a click on Segment offers to install it."""
        state = self.collectState()
        if state.modelName and self.dependencies.show():
            request = self.logic.inference.prepare(state.modelName, state.segmenting)
            if request is not None and request.code is None:
                self.modelLoad = (state.modelName, request)
                if not self._segmenting():
                    self.ui.segmentStatusLabel.text = _("Loading model '{name}'...").format(name=state.modelName)
                self.timer.start()

    def exit(self):
        self.saveToParameterNode()

    def onSceneStartClose(self, caller, event):
        self.training.plot = None  # its nodes go with the scene; training itself goes on

    def onSceneEndClose(self, caller, event):
        self.pairsTable.clear()
        self.loadFromParameterNode()

    def onSceneEndImport(self, caller, event):
        self.loadFromParameterNode()  # a loaded scene brings its own parameters

    # ----------------------------------------------------------------------------- state <-> GUI
    def collectState(self) -> ModuleState:
        ui = self.ui
        # Parameters without a widget (seed, workers, checkpoint and validation intervals, spacing) keep the
        # values saved in the scene, which a script may have set.
        training = dataclasses.replace(self.logic.state().training, **readFields(ui, TRAINING_FIELDS),
                                       patchSize=readPatchSize(ui), startFrom=self.adaptation.startFrom())
        return ModuleState(training=training, segmenting=SegmentParameters(**readFields(ui, SEGMENT_FIELDS)),
                           pairs=self.pairsTable.pairs(),
                           unlabeled=list(ui.unlabeledSelector.checkedNodes()), modelName=ui.modelComboBox.currentText,
                           inputVolume=ui.inputVolumeSelector.currentNode(),
                           outputSegmentation=ui.outputSegmentationSelector.currentNode(), roi=ui.roiSelector.currentNode())

    def saveToParameterNode(self):
        if not self._loading:
            self.logic.saveState(self.collectState())

    def loadFromParameterNode(self):
        state = self.logic.state()
        ui = self.ui
        self._loading = True
        try:
            showFields(ui, TRAINING_FIELDS, state.training)
            showFields(ui, SEGMENT_FIELDS, state.segmenting)
            showPatchSize(ui, state.training.patchSize)
            self.adaptation.showStartFrom(state.training.startFrom)
            self.pairsTable.clear()
            for pair in state.pairs:
                self.pairsTable.add(pair)
            for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
                ui.unlabeledSelector.setCheckState(node, qt.Qt.Checked if node in state.unlabeled else qt.Qt.Unchecked)
            if state.modelName:
                ui.modelComboBox.setCurrentText(state.modelName)
            for selector, node in ((ui.inputVolumeSelector, state.inputVolume), (ui.roiSelector, state.roi),
                                   (ui.outputSegmentationSelector, state.outputSegmentation)):
                if node is not None:
                    selector.setCurrentNode(node)
        finally:
            self._loading = False
        self.updateButtons()

    def onInputsChanged(self, *args):
        if self._loading:
            return
        self.saveToParameterNode()
        self.updateButtons()

    # ---------------------------------------------------------------------------------- buttons
    def updateButtons(self):
        ui = self.ui
        state = self.collectState()
        job, running = self.training.job, self.training.running
        report = checkTrainingInputs(state.pairs, state.unlabeled, state.training)
        ui.trainButton.enabled = report.ok and not running
        ui.trainButton.toolTip = report.tooltip() or _("Export the pairs and train in the background")
        ui.stopButton.enabled = running and job.state == "running"
        ui.resumeButton.enabled = not running and job is not None and job.canResume
        for name in INPUT_WIDGETS:
            getattr(ui, name).enabled = not running
        problems = []
        if not state.modelName:
            problems.append(_("no model: download, import or train one (Models section)"))
        if state.inputVolume is None:
            problems.append(_("choose an input volume"))
        problems += state.segmenting.problems()
        ui.segmentButton.enabled = not problems and not self._segmenting()
        ui.segmentButton.toolTip = "\n".join(problems) or _("Segment the left atrium in the input volume")
        hasResult = state.outputSegmentation is not None and state.inputVolume is not None
        ui.openSegmentEditorButton.enabled = hasResult
        ui.addToTrainingButton.enabled = hasResult and not running
        self.adaptation.updateButtons(state, running)

    # ------------------------------------------------------------------------------ background jobs
    def onTimer(self):
        self.training.follow()
        if self._segmenting() and self.logic.inference.poll(self.segmentJob):
            self._segmentFinished()
        if self.modelLoad is not None and self.logic.inference.server.poll(self.modelLoad[1]) is not None:
            self._modelLoaded()
        checking = self.dependencies.poll()
        downloading = self.models.follow()
        ranking = self.adaptation.follow()
        busy = (self.training.running or self._segmenting() or self.modelLoad is not None or checking or downloading
                or ranking)
        if not busy:
            self.timer.stop()
        self.updateButtons()

    # ------------------------------------------------------------------------------- segmenting
    def onSegment(self):
        if not self.dependencies.ready():
            return
        state = self.collectState()
        try:
            self.segmentJob = self.logic.inference.start(state.inputVolume, state.modelName, state.outputSegmentation,
                                                         state.roi, state.segmenting)
        except (ValueError, OSError) as e:
            self._error(_("Cannot segment"), str(e))
            return
        if state.outputSegmentation is None:
            self.ui.outputSegmentationSelector.setCurrentNode(self.segmentJob.segmentationNode)
        self.ui.segmentStatusLabel.text = _("Segmenting...")
        self.timer.start()
        self.updateButtons()

    def _segmenting(self) -> bool:
        return self.segmentJob is not None and not self.segmentJob.finished

    def _modelLoaded(self):
        (name, request), self.modelLoad = self.modelLoad, None
        if not self._segmenting():  # the label is the running segmentation's otherwise
            loaded = _("Model '{name}' loaded: ready to segment.").format(name=name)
            self.ui.segmentStatusLabel.text = loaded if request.code == 0 else ""  # a failure: the click explains

    def _segmentFinished(self):
        job = self.segmentJob
        self.ui.segmentStatusLabel.text = job.message
        if job.state == "done":
            Doubt.showDoubt(job.inputVolume, job.doubtNode)  # the overlay, or none (an earlier one taken away)
            slicer.util.setSliceViewerLayers(background=job.inputVolume, fit=True)
            if job.uncertainty:
                self.ui.segmentStatusLabel.text = "\n".join((job.message, _(
                    "Neither head found the left atrium: check this scan first.") if job.doubtScore is None else
                    _("Doubt {score:.3f} (higher: check this scan first).").format(score=job.doubtScore)))
            job.segmentationNode.GetDisplayNode().SetVisibility(True)
            self.ui.show3DButton.setSegmentationNode(job.segmentationNode)
        elif job.state == "failed":
            self._error(_("Segmentation failed"), job.message, "\n".join(job.log[-40:]))

    def onOpenSegmentEditor(self):
        state = self.collectState()
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.util.getModuleWidget("SegmentEditor").editor  # its qMRMLSegmentEditorWidget
        editor.setSegmentationNode(state.outputSegmentation)
        editor.setSourceVolumeNode(state.inputVolume)

    def onAddToTraining(self):
        state = self.collectState()
        addToTrainingSet(state, state.inputVolume, state.outputSegmentation)
        self.logic.saveState(state)
        self.loadFromParameterNode()
        self.ui.trainCollapsibleButton.collapsed = False

    # ---------------------------------------------------------------------------------- helpers
    def _error(self, title, message, details=""):
        logging.error("%s: %s\n%s", title, message, details)
        if self.showDialogs:
            slicer.util.errorDisplay(f"{title}: {message}", detailedText=details or None)
