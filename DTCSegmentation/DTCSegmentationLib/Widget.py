"""The module panel (Qt). Imported inside Slicer by DTCSegmentation.py (and by Testing/Python/test_panel.py
over stand-ins for Slicer's Qt); all work is delegated to the Qt-free logic classes. A QTimer polls the background jobs every 0.5 s, so the GUI never blocks.

Parameters are bound by hand through `TRAINING_FIELDS` / `SEGMENT_FIELDS` (see Parameters.py for why
not parameterNodeWrapper): every edit is written to the parameter node, and the node is read back into
the widgets when the module is entered or the scene changes.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging

import ctk  # noqa: F401  (Slicer's designer widgets)
import qt
import slicer
from slicer.i18n import tr as _
from slicer.util import VTKObservationMixin

from . import Dependencies
from .InferenceLogic import addToTrainingSet
from .Parameters import LabeledPair, ModuleState, SegmentParameters
from .ProgressPlot import ProgressPlot
from .SceneIO import labelChoices
from .Validation import checkTrainingInputs


def _setValue(widget, value):
    widget.value = value


def _setChecked(widget, value):
    widget.checked = bool(value)


def _setText(widget, value):
    index = widget.findText(str(value))
    if index < 0:
        widget.addItem(str(value))
        index = widget.findText(str(value))
    widget.setCurrentIndex(index)


# widget kind -> (its change signal, read its value, show a value); one table, so that wiring, saving and
# loading cannot disagree about a kind
WIDGET_KINDS = {
    "value": (lambda w: "valueChanged(double)" if isinstance(w, qt.QDoubleSpinBox) else "valueChanged(int)",
              lambda w: w.value, _setValue),
    "text": (lambda w: "currentTextChanged(QString)", lambda w: w.currentText, _setText),
    "number": (lambda w: "currentTextChanged(QString)", lambda w: int(w.currentText), _setText),
    "checked": (lambda w: "toggled(bool)", lambda w: w.checked, _setChecked),
}

# dataclass field -> (widget name, kind)
TRAINING_FIELDS = {
    "recipe": ("recipeComboBox", "text"), "iterations": ("iterationsSpinBox", "value"),
    "labeledBatch": ("labeledBatchSpinBox", "value"),
    "unlabeledBatch": ("unlabeledBatchSpinBox", "value"), "learningRate": ("learningRateSpinBox", "value"),
    "k": ("kSpinBox", "value"), "nFilters": ("nFiltersSpinBox", "value"), "device": ("deviceComboBox", "text"),
    "valFraction": ("valFractionSpinBox", "value"),
}
PATCH_WIDGETS = ("patchXSpinBox", "patchYSpinBox", "patchZSpinBox")
SEGMENT_FIELDS = {
    "device": ("segmentDeviceComboBox", "text"), "mode": ("segmentModeComboBox", "text"),
    "windowSize": ("windowSizeComboBox", "text"), "precision": ("precisionComboBox", "text"),
    "memoryGb": ("memorySpinBox", "value"), "orientations": ("orientationsComboBox", "number"),
    "largestComponent": ("largestComponentCheckBox", "checked"),
}
INPUT_WIDGETS = ("labeledTable", "addPairButton", "removePairButton", "unlabeledSelector", "trainingParametersGroupBox",
                 "modelNameLineEdit")


class DTCPanel(VTKObservationMixin):
    def __init__(self, uiPath: str, layout, logic, showDialogs: bool = True):
        VTKObservationMixin.__init__(self)
        self.logic = logic
        self.showDialogs = showDialogs and not slicer.app.commandOptions().noMainWindow
        self.uiWidget = slicer.util.loadUI(uiPath)
        layout.addWidget(self.uiWidget)
        self.ui = slicer.util.childWidgetVariables(self.uiWidget)
        self.uiWidget.setMRMLScene(slicer.mrmlScene)
        self.rows = []  # (volume combo, label combo, segment combo) per labeled pair
        self.trainingJob = None
        self.segmentJob = None
        self.modelLoad = None  # (model name, load request) while the inference child loads it ahead of a click
        self.deviceCheck = None
        self.plot = None
        self._logSeen = 0
        self._loading = False
        self.timer = qt.QTimer()
        self.timer.setInterval(500)
        self.timer.connect("timeout()", self.onTimer)
        self._connect()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        self.ui.labeledTable.horizontalHeader().setSectionResizeMode(qt.QHeaderView.Stretch)
        self.ui.modelsTable.horizontalHeader().setSectionResizeMode(0, qt.QHeaderView.ResizeToContents)
        self._loading = True  # the widgets' defaults must not overwrite the parameters of a loaded scene
        try:
            self.refreshModels()
        finally:
            self._loading = False
        self.loadFromParameterNode()

    # ------------------------------------------------------------------------------------ wiring
    def _connect(self):
        ui = self.ui
        for name, kind in list(TRAINING_FIELDS.values()) + list(SEGMENT_FIELDS.values()):
            widget = getattr(ui, name)
            widget.connect(WIDGET_KINDS[kind][0](widget), self.onInputsChanged)
        for name in PATCH_WIDGETS:
            getattr(ui, name).connect("valueChanged(int)", self.onInputsChanged)
        for selector in (ui.inputVolumeSelector, ui.roiSelector, ui.outputSegmentationSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputsChanged)
        ui.unlabeledSelector.connect("checkedNodesChanged()", self.onInputsChanged)
        ui.modelComboBox.connect("currentTextChanged(QString)", self.onInputsChanged)
        ui.modelComboBox.connect("activated(int)", lambda index: self.prepareInference())  # the user's choice
        ui.outputSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", ui.show3DButton.setSegmentationNode)
        ui.addPairButton.connect("clicked()", lambda: self.addRow())
        ui.removePairButton.connect("clicked()", self.onRemovePair)
        ui.trainButton.connect("clicked()", self.onTrain)
        ui.stopButton.connect("clicked()", self.onStop)
        ui.resumeButton.connect("clicked()", self.onResume)
        ui.segmentButton.connect("clicked()", self.onSegment)
        ui.openSegmentEditorButton.connect("clicked()", self.onOpenSegmentEditor)
        ui.addToTrainingButton.connect("clicked()", self.onAddToTraining)
        ui.importModelButton.connect("clicked()", self.onImportModel)
        ui.exportModelButton.connect("clicked()", self.onExportModel)
        ui.renameModelButton.connect("clicked()", self.onRenameModel)
        ui.deleteModelButton.connect("clicked()", self.onDeleteModel)
        ui.refreshModelsButton.connect("clicked()", self.refreshModels)
        ui.checkDependenciesButton.connect("clicked()", self.onCheckDependencies)
        ui.installDependenciesButton.connect("clicked()", self.onInstallDependencies)
        ui.copyReportButton.connect("clicked()",
                                    lambda: qt.QApplication.clipboard().setText(ui.dependencyStatusLabel.text))

    def cleanup(self):
        self.timer.stop()
        self.removeObservers()
        if self.trainingJob is not None and not self.trainingJob.finished:
            self.trainingJob.process.killTree()  # Slicer is closing: leave no orphan trainer behind
        if self._segmenting():
            self.logic.inference.cancel(self.segmentJob)
        self.logic.inference.shutdown()
        if self.deviceCheck is not None:
            self.deviceCheck.process.killTree()

    def enter(self):
        self.loadFromParameterNode()
        self.prepareInference()

    def prepareInference(self):
        """Have the inference child load the chosen model now: the next Segment click then finds the backend
        imported and the model loaded."""
        state = self.collectState()
        if state.modelName:
            request = self.logic.inference.prepare(state.modelName, state.segmenting)
            if request is not None and request.code is None:
                self.modelLoad = (state.modelName, request)
                if not self._segmenting():
                    self.ui.segmentStatusLabel.text = _("Loading model '{name}'...").format(name=state.modelName)
                self.timer.start()

    def exit(self):
        self.saveToParameterNode()

    def onSceneStartClose(self, caller, event):
        self.plot = None  # its nodes go with the scene; training itself goes on

    def onSceneEndClose(self, caller, event):
        self.clearRows()
        self.loadFromParameterNode()

    def onSceneEndImport(self, caller, event):
        self.loadFromParameterNode()  # a loaded scene brings its own parameters

    # ----------------------------------------------------------------------------- state <-> GUI
    def collectState(self) -> ModuleState:
        ui = self.ui
        read = lambda fields: {field: WIDGET_KINDS[kind][1](getattr(ui, name))
                               for field, (name, kind) in fields.items()}
        # Parameters without a widget (seed, workers, checkpoint and validation intervals, spacing) keep the
        # values saved in the scene, which a script may have set.
        training = dataclasses.replace(self.logic.state().training, **read(TRAINING_FIELDS),
                                       patchSize=tuple(getattr(ui, n).value for n in PATCH_WIDGETS))
        seg = read(SEGMENT_FIELDS)
        pairs = []
        for volumeCombo, labelCombo, segmentCombo in self.rows:
            key = segmentCombo.currentData if segmentCombo.count > 1 and segmentCombo.currentIndex > 0 else None
            if segmentCombo.count == 2:  # one choice: use it
                key = segmentCombo.itemData(1)
            pairs.append(LabeledPair(volumeCombo.currentNode(), labelCombo.currentNode(), key))
        return ModuleState(training=training, segmenting=SegmentParameters(**seg), pairs=pairs,
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
            for fields, values in ((TRAINING_FIELDS, state.training), (SEGMENT_FIELDS, state.segmenting)):
                for field, (name, kind) in fields.items():
                    WIDGET_KINDS[kind][2](getattr(ui, name), getattr(values, field))
            for name, value in zip(PATCH_WIDGETS, state.training.patchSize):
                getattr(ui, name).value = int(value)
            self.clearRows()
            for pair in state.pairs:
                self.addRow(pair)
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

    # ------------------------------------------------------------------------ labeled-pairs table
    def addRow(self, pair: LabeledPair | None = None):
        table = self.ui.labeledTable
        row = table.rowCount
        table.insertRow(row)
        volumeCombo = self._nodeCombo(["vtkMRMLScalarVolumeNode"], pair.volume if pair else None)
        labelCombo = self._nodeCombo(["vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode"], pair.label if pair else None)
        segmentCombo = qt.QComboBox()
        segmentCombo.toolTip = _("the segment (or label value) that is the left atrium")
        table.setCellWidget(row, 0, volumeCombo)
        table.setCellWidget(row, 1, labelCombo)
        table.setCellWidget(row, 2, segmentCombo)
        self.rows.append((volumeCombo, labelCombo, segmentCombo))
        self._fillSegments(segmentCombo, labelCombo.currentNode(), pair.segment if pair else None)
        labelCombo.connect("currentNodeChanged(vtkMRMLNode*)",
                           lambda node, combo=segmentCombo: (self._fillSegments(combo, node, None), self.onInputsChanged()))
        volumeCombo.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputsChanged)
        segmentCombo.connect("currentIndexChanged(int)", self.onInputsChanged)
        if pair is None:
            self.onInputsChanged()

    @staticmethod
    def _nodeCombo(types, node):
        combo = slicer.qMRMLNodeComboBox()
        combo.nodeTypes = types
        combo.noneEnabled = True
        combo.addEnabled = False
        combo.removeEnabled = False
        combo.showChildNodeTypes = False
        combo.setMRMLScene(slicer.mrmlScene)
        combo.setCurrentNode(node)
        return combo

    @staticmethod
    def _fillSegments(combo, labelNode, selected):
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(_("(choose)"), None)
        for choice in labelChoices(labelNode):
            combo.addItem(choice.name, choice.key)
        index = combo.findData(selected) if selected is not None else (1 if combo.count == 2 else 0)
        combo.setCurrentIndex(max(0, index))
        combo.blockSignals(False)

    def onRemovePair(self):
        row = self.ui.labeledTable.currentRow()
        if 0 <= row < len(self.rows):
            self.ui.labeledTable.removeRow(row)
            del self.rows[row]
            self.onInputsChanged()

    def clearRows(self):
        self.ui.labeledTable.setRowCount(0)
        self.rows = []

    # ---------------------------------------------------------------------------------- buttons
    def updateButtons(self):
        ui = self.ui
        state = self.collectState()
        running = self.trainingJob is not None and not self.trainingJob.finished
        report = checkTrainingInputs(state.pairs, state.unlabeled, state.training)
        ui.trainButton.enabled = report.ok and not running
        ui.trainButton.toolTip = report.tooltip() or _("Export the pairs and train in the background")
        ui.stopButton.enabled = running and self.trainingJob.state == "running"
        ui.resumeButton.enabled = not running and self.trainingJob is not None and self.trainingJob.canResume
        for name in INPUT_WIDGETS:
            getattr(ui, name).enabled = not running
        problems = []
        if not state.modelName:
            problems.append(_("no model: train one or import one (Models section)"))
        if state.inputVolume is None:
            problems.append(_("choose an input volume"))
        problems += state.segmenting.problems()
        ui.segmentButton.enabled = not problems and not self._segmenting()
        ui.segmentButton.toolTip = "\n".join(problems) or _("Segment the left atrium in the input volume")
        hasResult = state.outputSegmentation is not None and state.inputVolume is not None
        ui.openSegmentEditorButton.enabled = hasResult
        ui.addToTrainingButton.enabled = hasResult and not running

    # --------------------------------------------------------------------------------- training
    def _dependenciesReady(self) -> bool:
        try:
            status = Dependencies.ensure(interactive=self.showDialogs)
        except Dependencies.DependencyError as e:
            self._error(_("Missing dependencies"), str(e))
            return False
        self.ui.dependencyStatusLabel.text = status.text()
        return status.ok

    def onTrain(self):
        if not self._dependenciesReady():
            return
        state = self.collectState()
        try:
            self.trainingJob = self.logic.training.start(state.pairs, state.unlabeled, state.training)
        except (ValueError, OSError, RuntimeError) as e:  # RuntimeError: a label the scene cannot export
            self._error(_("Cannot start training"), str(e))
            return
        self._startFollowing()

    def onResume(self):
        if self.trainingJob is None:
            return
        self.trainingJob.params = self.collectState().training
        shown = self.trainingJob.monitor.count  # the log box already holds these lines
        try:
            self.logic.training.resume(self.trainingJob)
        except (ValueError, RuntimeError) as e:
            self._error(_("Cannot resume"), str(e))
            return
        self._startFollowing(logSeen=shown)

    def _startFollowing(self, logSeen: int = 0):
        if self.plot is None:
            self.plot = ProgressPlot(slicer.mrmlScene)
        self.plot.clear()
        self.ui.plotWidget.setMRMLPlotChartNode(self.plot.chart)
        self._logSeen = logSeen
        self.ui.trainingStatusLabel.text = _("Starting (exported data in {folder})").format(
            folder=self.trainingJob.outDir)
        self.timer.start()
        self.updateButtons()

    def onStop(self):
        if self.trainingJob is not None:
            self.logic.training.stop(self.trainingJob)
            self.ui.trainingStatusLabel.text = _("Stopping: saving a checkpoint...")
            self.updateButtons()

    def onTimer(self):
        if self.trainingJob is not None and self.trainingJob.state in ("running", "stopping"):
            self._followTraining()
        if self._segmenting() and self.logic.inference.poll(self.segmentJob):
            self._segmentFinished()
        if self.modelLoad is not None and self.logic.inference.server.poll(self.modelLoad[1]) is not None:
            self._modelLoaded()
        if self.deviceCheck is not None and self.deviceCheck.poll():
            self._deviceCheckFinished()
        busy = (self.trainingJob is not None and not self.trainingJob.finished) or self._segmenting() or \
            self.modelLoad is not None or self.deviceCheck is not None
        if not busy:
            self.timer.stop()
        self.updateButtons()

    def _followTraining(self):
        job = self.trainingJob
        self.logic.training.poll(job)
        monitor = job.monitor
        new = min(monitor.count - self._logSeen, len(monitor.log))
        for line in list(monitor.log)[len(monitor.log) - new:] if new > 0 else []:
            self.ui.logTextEdit.appendPlainText(line)
        self._logSeen = monitor.count
        self.ui.trainingProgressBar.value = round(100 * monitor.fraction)
        self.ui.trainingStatusLabel.text = monitor.statusText()
        if self.plot is not None:
            self.plot.update(monitor)
        if not job.finished:
            return
        self.ui.trainingStatusLabel.text = job.message
        if job.state == "done":
            name = self.ui.modelNameLineEdit.text.strip() or "dtc-" + datetime.datetime.now().strftime("%Y%m%d-%H%M")
            try:
                info = self.logic.store.importModel(job.modelPath, name, extra={"run_folder": str(job.outDir)})
                self.refreshModels(select=info.name)
                added = _("Added to the model store as '{name}'.").format(name=info.name)
                self.ui.trainingStatusLabel.text = f"{job.message}\n{added}"
            except (ValueError, OSError) as e:
                self._error(_("Could not add the model to the store"), str(e))
        elif job.state == "failed":
            self._error(_("Training failed"), job.message, job.logTail(40))

    # ------------------------------------------------------------------------------- segmenting
    def onSegment(self):
        if not self._dependenciesReady():
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
            slicer.util.setSliceViewerLayers(background=job.inputVolume, fit=True)
            job.segmentationNode.GetDisplayNode().SetVisibility(True)
            self.ui.show3DButton.setSegmentationNode(job.segmentationNode)
        elif job.state == "failed":
            self._error(_("Segmentation failed"), job.message, "\n".join(job.log[-40:]))

    def onOpenSegmentEditor(self):
        state = self.collectState()
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(state.outputSegmentation)
        if hasattr(editor, "setSourceVolumeNode"):
            editor.setSourceVolumeNode(state.inputVolume)
        else:  # Slicer < 5.4
            editor.setMasterVolumeNode(state.inputVolume)

    def onAddToTraining(self):
        state = self.collectState()
        addToTrainingSet(state, state.inputVolume, state.outputSegmentation)
        self.logic.saveState(state)
        self.loadFromParameterNode()
        self.ui.trainCollapsibleButton.collapsed = False

    # ----------------------------------------------------------------------------------- models
    def refreshModels(self, select: str | None = None):
        ui = self.ui
        current = select or ui.modelComboBox.currentText
        models = self.logic.store.list()
        ui.modelComboBox.blockSignals(True)
        ui.modelComboBox.clear()
        for info in models:
            ui.modelComboBox.addItem(info.name)
            ui.modelComboBox.setItemData(ui.modelComboBox.count - 1, info.summary(), qt.Qt.ToolTipRole)
        index = ui.modelComboBox.findText(current)
        ui.modelComboBox.setCurrentIndex(index if index >= 0 else 0)
        ui.modelComboBox.blockSignals(False)
        ui.modelsTable.setRowCount(len(models))
        for row, info in enumerate(models):
            ui.modelsTable.setItem(row, 0, qt.QTableWidgetItem(info.name))
            ui.modelsTable.setItem(row, 1, qt.QTableWidgetItem(info.summary()))
        ui.modelFolderLabel.text = _("Model store: {folder}").format(folder=self.logic.store.root)
        self.onInputsChanged()

    def onImportModel(self):
        path = qt.QFileDialog.getOpenFileName(self.uiWidget, _("Import a DTC model"), "",
                                             _("DTC model") + " (*.pt *.pth);;" + _("All files") + " (*)")
        if not path:
            return
        try:
            info = self.logic.store.importModel(path)
        except (ValueError, OSError) as e:  # another kind of model, a corrupt file, no backend, a full disk
            self._error(_("Model refused"), str(e))
            return
        self.refreshModels(select=info.name)

    def _selectedModel(self) -> str | None:
        row = self.ui.modelsTable.currentRow()
        return self.ui.modelsTable.item(row, 0).text() if row >= 0 else None

    def onExportModel(self):
        name = self._selectedModel()
        if name is None:
            return
        path = qt.QFileDialog.getSaveFileName(self.uiWidget, _("Export a DTC model"), f"{name}.pt",
                                             _("DTC model") + " (*.pt)")
        if not path:
            return
        try:
            self.logic.store.export(name, path)
        except (ValueError, OSError) as e:  # an unwritable folder, a full disk
            self._error(_("Could not export the model"), str(e))

    def onRenameModel(self):
        name = self._selectedModel()
        if name is None:
            return
        newName = qt.QInputDialog.getText(self.uiWidget, _("Rename a model"), _("New name:"), qt.QLineEdit.Normal, name)
        if not newName or newName == name:
            return
        try:
            info = self.logic.store.rename(name, newName)
        except (ValueError, OSError) as e:  # a name in use or not a folder name
            self._error(_("Could not rename the model"), str(e))
            return
        self.refreshModels(select=info.name)

    def onDeleteModel(self):
        name = self._selectedModel()
        if name is None:
            return
        if self.showDialogs and not slicer.util.confirmYesNoDisplay(
                _("Delete the model '{name}' from the store?").format(name=name)):
            return
        self.logic.store.delete(name)
        self.refreshModels()

    # ----------------------------------------------------------------------------- dependencies
    def onCheckDependencies(self):
        status = Dependencies.check()
        self.ui.dependencyStatusLabel.text = Dependencies.report(status)
        if status.ok and self.deviceCheck is None:  # the devices, as the Python that trains sees them
            self.deviceCheck = Dependencies.DeviceCheck()
            self.timer.start()

    def _deviceCheckFinished(self):
        self.ui.dependencyStatusLabel.text = Dependencies.report(Dependencies.check(), self.deviceCheck.report)
        self.deviceCheck = None

    def onInstallDependencies(self):
        self.logic.inference.shutdown()  # the next inference child imports what gets installed now
        if self._dependenciesReady():
            self.ui.dependencyStatusLabel.text += "\n" + _("Ready.")

    # ---------------------------------------------------------------------------------- helpers
    def _error(self, title, message, details=""):
        logging.error("%s: %s\n%s", title, message, details)
        if self.showDialogs:
            slicer.util.errorDisplay(f"{title}: {message}", detailedText=details or None)
