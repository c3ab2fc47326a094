"""The Dependencies section of the panel (Qt): check and install the backend's packages, report the
devices as the Python that trains sees them, and copy the report for a bug report."""
from __future__ import annotations

import qt
from slicer.i18n import tr as _

from . import Dependencies


class DependenciesSection:
    def __init__(self, ui, showDialogs: bool, error, startTimer, beforeInstall):
        self.ui = ui
        self.showDialogs = showDialogs
        self.error = error  # (title, message, details): how the panel reports a failure
        self.startTimer = startTimer  # the panel's timer calls poll() while the device check runs
        self.beforeInstall = beforeInstall
        self.deviceCheck = None
        ui.checkDependenciesButton.connect("clicked()", self.onCheck)
        ui.installDependenciesButton.connect("clicked()", self.onInstall)
        ui.copyReportButton.connect("clicked()",
                                    lambda: qt.QApplication.clipboard().setText(ui.dependencyStatusLabel.text))

    def ready(self) -> bool:
        """Whether the backend can run, installing what is missing (asking first, where dialogs are shown);
        a failed install is a dialog saying why and what to do."""
        try:
            status = Dependencies.ensure(interactive=self.showDialogs)
        except Dependencies.DependencyError as e:
            self.show()
            self.error(_("Missing dependencies"), str(e), e.details)
            return False
        self.ui.dependencyStatusLabel.text = status.text()
        return status.ok

    def show(self) -> bool:
        """Whether every package is there; shows what is missing, broken or wrong (a CPU-only PyTorch on a
        computer with an NVIDIA GPU) in the opened section. Quick: reads package metadata, starts nothing."""
        status = Dependencies.check()
        if not status.ok or status.gpuAdvice:
            self.ui.dependencyStatusLabel.text = Dependencies.report(status)
            self.ui.dependenciesCollapsibleButton.collapsed = False
        return status.ok

    def onCheck(self):
        status = Dependencies.check()
        self.ui.dependencyStatusLabel.text = Dependencies.report(status)
        if status.ok and self.deviceCheck is None:  # the devices, as the Python that trains sees them
            self.deviceCheck = Dependencies.DeviceCheck()
            self.startTimer()

    def poll(self) -> bool:
        """Show the device check's report once it is in; whether it still runs."""
        if self.deviceCheck is not None and self.deviceCheck.poll():
            self.ui.dependencyStatusLabel.text = Dependencies.report(Dependencies.check(), self.deviceCheck.report)
            self.deviceCheck = None
        return self.deviceCheck is not None

    def onInstall(self):
        self.beforeInstall()
        if self.ready():
            self.ui.dependencyStatusLabel.text += "\n" + _("Ready.")

    def cleanup(self):
        if self.deviceCheck is not None:
            self.deviceCheck.process.killTree()
