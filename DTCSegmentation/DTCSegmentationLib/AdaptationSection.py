"""The Train section's adaptation parts (Qt): "Start from" (a new network, the built-in model or any model
of the store, fine-tuned with `dtc train --init`) and "Correct these first" (the unlabeled volumes ordered
by the model's doubt, scored by `dtc rank` in a child that the panel's timer follows; a row chosen becomes
the Segment section's input). The work is Adaptation.py's."""
from __future__ import annotations

import dataclasses

import qt
import slicer
from slicer.i18n import tr as _

from .Adaptation import DoubtRanking, startChoices, startModel, switchStart
from .ParameterWidgets import PATCH_WIDGETS, TRAINING_FIELDS, showFields

# The settings a model to start from brings (its weights fix them): shown, but not editable, while one is chosen.
MODEL_FIELDS = ("nFiltersSpinBox", "kSpinBox", *PATCH_WIDGETS)


class AdaptationSection:
    def __init__(self, ui, logic, models, ready, collectState, startTimer, onChanged, error):
        self.ui = ui
        self.logic = logic  # the module's logic: store, segmenting parameters
        self.ready = ready  # whether the backend can run (installing it first, if the user agrees)
        self.collectState = collectState
        self.startTimer = startTimer  # the panel's timer calls follow() while the ranking runs
        self.onChanged = onChanged  # the buttons' states may have changed
        self.error = error
        self.ranking = None  # the running (or last) DoubtRanking
        self.rows = []  # the ranked volumes, as the table shows them
        self.shownStart = ""  # the start that the iterations and learning rate shown were set for
        models.listeners.append(self.fillStartFrom)  # the store's list changed: so do the choices
        ui.rankTable.horizontalHeader().setSectionResizeMode(0, qt.QHeaderView.Stretch)
        ui.startFromComboBox.connect("activated(int)", self.onStartChosen)
        ui.rankButton.connect("clicked()", self.onRank)
        ui.rankTable.connect("currentCellChanged(int,int,int,int)", lambda row, *args: self.onRowChosen(row))

    # --------------------------------------------------------------------------------- start from
    def startFrom(self) -> str:
        return self.ui.startFromComboBox.currentData or ""

    def fillStartFrom(self, models=None):
        """List a new network, the built-in model and the store's models (`models`, as the Models section has
        just read them); keep the choice, and a chosen model that has gone from the store (Train says so)."""
        combo, current = self.ui.startFromComboBox, self.startFrom()
        combo.blockSignals(True)
        combo.clear()
        for name, builtin in startChoices(self.logic.store, models):
            text = _("A new network") if not name else (_("{name} (built-in)").format(name=name) if builtin else name)
            combo.addItem(text, name)
        combo.setCurrentIndex(0)
        combo.blockSignals(False)
        self.showStartFrom(current)

    def showStartFrom(self, name: str):
        combo = self.ui.startFromComboBox
        combo.blockSignals(True)
        if name and combo.findData(name) < 0:
            combo.addItem(_("{name} (no longer in the model store)").format(name=name), name)
        combo.setCurrentIndex(combo.findData(name))
        combo.blockSignals(False)
        self.shownStart = name
        self.enableModelFields()
        combo.toolTip = _("a new network, or a model to fine-tune (dtc train --init): its filters, k, patch and "
                          "spacing come with it, the optimizer starts fresh")

    def enableModelFields(self):
        for name in MODEL_FIELDS:
            getattr(self.ui, name).enabled = not self.shownStart

    def onStartChosen(self, index):
        """The user's choice: iterations and learning rate still at the other start's defaults take this one's."""
        before = dataclasses.replace(self.collectState().training, startFrom=self.shownStart)
        self.shownStart = self.startFrom()
        self.enableModelFields()
        showFields(self.ui, {k: TRAINING_FIELDS[k] for k in ("iterations", "learningRate")},
                   switchStart(before, self.shownStart))

    # ---------------------------------------------------------------------------- correct these first
    def rankModel(self, state) -> str:
        """The model that scores the volumes: the one a training starts from, else the Segment section's."""
        return state.training.startFrom or state.modelName

    def running(self) -> bool:
        return self.ranking is not None and not self.ranking.finished

    def updateButtons(self, state, training: bool):
        problems = []
        if not state.unlabeled:
            problems.append(_("check the unlabeled volumes to order"))
        if not self.rankModel(state):
            problems.append(_("no model: choose one in Start from or in the Segment section"))
        self.ui.rankButton.enabled = not problems and not self.running() and not training
        self.ui.rankButton.toolTip = "\n".join(problems) or _(
            "segment every unlabeled volume with {name} in the background and order them by its doubt, most "
            "doubtful first: the ones to correct first").format(name=self.rankModel(state))

    def onRank(self):
        if self.running() or not self.ready():
            return
        state = self.collectState()
        try:
            modelPath = startModel(self.logic.store, self.rankModel(state))
            self.ranking = DoubtRanking(state.unlabeled, modelPath, state.segmenting)
        except (ValueError, OSError) as e:
            self.error(_("Cannot order by doubt"), str(e))
            return
        self.ui.rankStatusLabel.text = _("Scoring {count} volumes with {name}...").format(
            count=len(state.unlabeled), name=self.rankModel(state))
        self.startTimer()
        self.onChanged()

    def follow(self) -> bool:
        """Called by the panel's timer; True while the ranking runs. Once done: the table lists the volumes
        most doubtful first, with each score."""
        if self.ranking is None or self.ranking.finished:
            return False
        if not self.ranking.poll():
            return True
        ranking, ui = self.ranking, self.ui
        if ranking.state != "done":
            ui.rankStatusLabel.text = ranking.message
            self.error(_("Ordering by doubt failed"), ranking.message, "\n".join(ranking.log[-30:]))
            return False
        self.rows = [volume for volume, score in ranking.ranking]
        ui.rankTable.blockSignals(True)
        ui.rankTable.setRowCount(len(ranking.ranking))
        for row, (volume, score) in enumerate(ranking.ranking):
            ui.rankTable.setItem(row, 0, qt.QTableWidgetItem(volume.GetName()))
            item = qt.QTableWidgetItem(_("none") if score is None else f"{score:.3f}")
            item.setToolTip(_("neither head found the atrium: check it first") if score is None else
                            _("mean doubt where either head sees the atrium"))
            ui.rankTable.setItem(row, 1, item)
        ui.rankTable.blockSignals(False)
        ui.rankStatusLabel.text = _("Most doubtful first: choose one, Segment it, correct it, Add to training set.")
        return False

    def onRowChosen(self, row: int):
        """The chosen volume becomes the Segment section's input, with its own segmentation if it has one."""
        if not 0 <= row < len(self.rows) or self.rows[row].GetScene() is None:
            return
        volume = self.rows[row]
        self.ui.inputVolumeSelector.setCurrentNode(volume)
        self.ui.outputSegmentationSelector.setCurrentNode(
            slicer.mrmlScene.GetFirstNodeByName(_segmentationName(volume)))

    def cleanup(self):
        if self.running():
            self.ranking.cancel()


def _segmentationName(volume) -> str:
    return f"{volume.GetName()} segmentation"  # InferenceLogic's name for a new result
