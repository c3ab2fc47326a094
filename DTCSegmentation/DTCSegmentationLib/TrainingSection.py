"""The Train section of the panel (Qt): start training on the chosen pairs, follow it (status line, progress
bar, log, curves in the plot view), stop, resume, offer the run that an earlier session left unfinished,
and add the finished model to the model store."""
from __future__ import annotations

import datetime

import slicer
from slicer.i18n import tr as _

from .ProgressPlot import ProgressPlot

CLOSE_GRACE_S = 5.0  # how long Slicer's exit waits for a running trainer's checkpoint


class TrainingSection:
    def __init__(self, ui, logic, models, ready, collectState, startTimer, onChanged, error):
        self.ui = ui
        self.logic = logic  # the module's logic: training, store
        self.models = models  # the Models section, refreshed when a model is added
        self.ready = ready  # whether the backend can run (installing it first, if the user agrees)
        self.collectState = collectState  # the panel's current choices
        self.startTimer = startTimer  # the panel's timer calls follow() while the job runs
        self.onChanged = onChanged  # the buttons' states may have changed
        self.error = error  # (title, message, details): how the panel reports a failure
        self.job = None
        self.plot = None  # made on the first start: its nodes belong to the scene
        self.logSeen = 0  # the job's log lines already in the log box
        ui.trainButton.connect("clicked()", self.onTrain)
        ui.stopButton.connect("clicked()", self.onStop)
        ui.resumeButton.connect("clicked()", self.onResume)

    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.finished

    def reopenUnfinished(self):
        """The newest run that an earlier session left without a model (Slicer closed or crashed while it
        trained), ready for Resume; None when there is none."""
        job = self.logic.training.reopenLatest()
        if job is not None:
            self.job = job
            self.ui.trainingStatusLabel.text = job.message
        return job

    def onTrain(self):
        if not self.ready():
            return
        state = self.collectState()
        try:
            self.job = self.logic.training.start(state.pairs, state.unlabeled, state.training)
        except (ValueError, OSError, RuntimeError) as e:  # RuntimeError: a label the scene cannot export
            self.error(_("Cannot start training"), str(e))
            return
        self._startFollowing()

    def onResume(self):
        if self.job is None:
            return
        self.job.params = self.collectState().training
        shown = self.job.monitor.count  # the log box already holds these lines
        try:
            self.logic.training.resume(self.job)
        except (ValueError, RuntimeError) as e:
            self.error(_("Cannot resume"), str(e))
            return
        self._startFollowing(logSeen=shown)

    def _startFollowing(self, logSeen: int = 0):
        if self.plot is None:
            self.plot = ProgressPlot(slicer.mrmlScene)
        self.plot.clear()
        self.ui.plotWidget.setMRMLPlotViewNode(self.plot.view)
        self.logSeen = logSeen
        self.ui.trainingStatusLabel.text = _("Starting (exported data in {folder})").format(folder=self.job.outDir)
        self.startTimer()
        self.onChanged()

    def onStop(self):
        if self.job is not None:
            self.logic.training.stop(self.job)
            self.ui.trainingStatusLabel.text = _("Stopping: saving a checkpoint...")
            self.onChanged()

    def follow(self):
        """Show what the running job has reported since the last call; when it has ended, say how, and add a
        finished model to the store."""
        if self.job is None or self.job.state not in ("running", "stopping"):
            return
        job = self.job
        self.logic.training.poll(job)
        monitor = job.monitor
        new = min(monitor.count - self.logSeen, len(monitor.log))
        for line in list(monitor.log)[len(monitor.log) - new:] if new > 0 else []:
            self.ui.logTextEdit.appendPlainText(line)
        self.logSeen = monitor.count
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
                self.models.refresh(select=info.name)
                added = _("Added to the model store as '{name}'.").format(name=info.name)
                self.ui.trainingStatusLabel.text = f"{job.message}\n{added}"
            except (ValueError, OSError) as e:
                self.error(_("Could not add the model to the store"), str(e))
        elif job.state == "failed":
            self.error(_("Training failed"), job.message, job.logTail(40))

    def cleanup(self):
        """Slicer is closing: the trainer gets a few seconds to save a checkpoint where it is (a GPU iteration
        takes a fraction of one), then its process tree is ended, so that no orphan is left behind."""
        if self.running:
            self.logic.training.stop(self.job, grace=CLOSE_GRACE_S)
            self.logic.training.wait(self.job)
