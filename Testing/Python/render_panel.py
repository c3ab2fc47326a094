"""Render DTCSegmentation.ui offscreen to a PNG (the README's picture of the panel).

Slicer's widget classes (qMRML*, ctk*) do not exist outside Slicer, so this script registers simple
PySide6 stand-ins for them with the same class names: a collapsible button is drawn as a titled group
box, node selectors as combo boxes filled with example node names, the plot widget as a matplotlib
picture of a real training run's progress.jsonl when one is given. Everything else is the real .ui.

    python Testing/Python/render_panel.py [-o Resources/Screenshots/panel.png] [--progress run/progress.jsonl]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[2]
UI = REPO / "DTCSegmentation" / "Resources" / "UI" / "DTCSegmentation.ui"
sys.path.insert(0, str(REPO / "DTCSegmentation"))  # the module's Qt-free logic (status texts, monitor)

from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402
from PySide6.QtUiTools import QUiLoader  # noqa: E402

EXAMPLES = {  # what the selectors show in the picture
    "inputVolumeSelector": ["LA_patient_017"], "roiSelector": ["(none)"],
    "outputSegmentationSelector": ["LA_patient_017 segmentation"],
    "unlabeledSelector": ["3 volumes checked"], "modelComboBox": ["la-dtc-16labeled"],
    "startFromComboBox": ["A new network", "la-dtc-16labeled"],
}
RANKED = [("LA_case_007", "0.094"), ("LA_case_004", "0.051"), ("LA_case_009", "0.038")]  # Correct these first


class qMRMLWidget(QtWidgets.QWidget):
    """Stand-in: Slicer's MRML-aware base widget."""


class ctkCollapsibleButton(QtWidgets.QGroupBox):
    """Stand-in: drawn as a group box titled like the button."""

    def _getText(self):
        return self.title()

    def _setText(self, text):
        self.setTitle("\u25be " + text)

    text = QtCore.Property(str, _getText, _setText)

    def _getCollapsed(self):
        return False

    def _setCollapsed(self, value):
        self.setProperty("dtcCollapsed", value)

    collapsed = QtCore.Property(bool, _getCollapsed, _setCollapsed)


class ctkCollapsibleGroupBox(QtWidgets.QGroupBox):
    """Stand-in for ctk's collapsible group box."""

    def _getCollapsed(self):
        return False

    def _setCollapsed(self, value):
        pass

    collapsed = QtCore.Property(bool, _getCollapsed, _setCollapsed)


class qMRMLNodeComboBox(QtWidgets.QComboBox):
    """Stand-in: a combo box (no scene here)."""


class qMRMLCheckableNodeComboBox(qMRMLNodeComboBox):
    """Stand-in for the checkable node combo box."""


class qMRMLSegmentationShow3DButton(QtWidgets.QPushButton):
    """Stand-in for Slicer's Show 3D button."""

    def __init__(self, parent=None):
        super().__init__("Show 3D", parent)


class qMRMLPlotWidget(QtWidgets.QLabel):
    """Stand-in: a picture of the curve Slicer's plot view draws from the same table."""


def plotPixmap(lines: list[str], width=400, height=220) -> QtGui.QPixmap:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width / 100, height / 100), dpi=100)
    if lines:
        events = [json.loads(l) for l in lines if l.startswith("{")]
        loss = [(e["iteration"], e["loss"]) for e in events if e.get("event") == "progress"]
        cons = [(e["iteration"], e["loss_consistency"]) for e in events if e.get("event") == "progress"]
        dice = [(e["iteration"], e["dice"]) for e in events if e.get("event") == "validation"]
        for points, label, color, style in ((loss, "loss", "#d9402f", "-"), (cons, "loss consistency", "#f2a61a", "-"),
                                           (dice, "dice", "#1a73d9", "o-")):
            if points:
                ax.plot(*zip(*points), style, color=color, label=label, markersize=3, linewidth=1)
        ax.legend(fontsize=7)
    ax.set_title("Training loss and validation Dice", fontsize=8)
    ax.set_xlabel("iteration", fontsize=7)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    path = Path(os.environ.get("TMPDIR", "/tmp")) / "dtc-plot.png"
    fig.savefig(path)
    plt.close(fig)
    return QtGui.QPixmap(str(path))


def render(output: Path, progress: Path | None = None) -> Path:
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    loader = QUiLoader()
    for cls in (qMRMLWidget, ctkCollapsibleButton, ctkCollapsibleGroupBox, qMRMLNodeComboBox,
                qMRMLCheckableNodeComboBox, qMRMLSegmentationShow3DButton, qMRMLPlotWidget):
        loader.registerCustomWidget(cls)
    file = QtCore.QFile(str(UI))
    file.open(QtCore.QFile.ReadOnly)
    panel = loader.load(file)
    file.close()
    if panel is None:
        raise RuntimeError(loader.errorString())
    for name, items in EXAMPLES.items():
        panel.findChild(QtWidgets.QComboBox, name).addItems(items)
    table = panel.findChild(QtWidgets.QTableWidget, "labeledTable")
    rows = [("LA_case_001", "LA_case_001 label", "Left atrium"), ("LA_case_002", "LA_case_002 segmentation", "Left atrium"),
            ("LA_case_003", "LA_case_003 segmentation", "Segment_1")]
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            table.setItem(r, c, QtWidgets.QTableWidgetItem(text))
    table.setFixedHeight(110)
    table.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.Stretch)  # as LabeledPairsTable.py sets it
    ranked = panel.findChild(QtWidgets.QTableWidget, "rankTable")
    ranked.setRowCount(len(RANKED))
    for r, row in enumerate(RANKED):
        for c, text in enumerate(row):
            ranked.setItem(r, c, QtWidgets.QTableWidgetItem(text))
    ranked.setFixedHeight(112)
    ranked.horizontalHeader().setSectionResizeMode(0, QtWidgets.QHeaderView.Stretch)  # as AdaptationSection.py
    panel.findChild(QtWidgets.QLabel, "rankStatusLabel").setText(
        "Most doubtful first: choose one, Segment it, correct it, Add to training set.")
    models = panel.findChild(QtWidgets.QTableWidget, "modelsTable")
    models.setRowCount(1)
    models.setItem(0, 0, QtWidgets.QTableWidgetItem("la-dtc-16labeled"))
    models.setItem(0, 1, QtWidgets.QTableWidgetItem("n_filters 16, patch (112, 112, 80), 6000 iterations"))
    models.setFixedHeight(70)
    models.horizontalHeader().setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeToContents)  # as ModelsSection.py
    for name in ("segmentButton", "trainButton", "stopButton", "rankButton"):
        panel.findChild(QtWidgets.QPushButton, name).setEnabled(True)
    status, seen = "Idle", []
    if progress and progress.is_file():  # the status line and the curves of a real run, two thirds in
        from DTCSegmentationLib.TrainingMonitor import TrainingMonitor

        monitor = TrainingMonitor()
        lines = progress.read_text().splitlines()
        seen = lines[: max(1, len(lines) * 2 // 3)]
        for line in seen:
            monitor.feed(line)
        status = monitor.statusText()
        panel.findChild(QtWidgets.QProgressBar, "trainingProgressBar").setValue(round(100 * monitor.fraction))
    panel.findChild(QtWidgets.QLabel, "trainingStatusLabel").setText(status)
    panel.findChild(QtWidgets.QLabel, "segmentStatusLabel").setText(  # as on entering the module
        "Model 'la-dtc-16labeled' loaded: ready to segment.")
    panel.findChild(QtWidgets.QPlainTextEdit, "logTextEdit").setFixedHeight(50)
    panel.findChild(qMRMLPlotWidget, "plotWidget").setPixmap(plotPixmap(seen))
    panel.findChild(QtWidgets.QLabel, "modelFolderLabel").setText("Model store: ~/.dtcsegmentation/models")
    # what Check shows on this machine: the packages found, then `dtc devices` run by the backend's Python
    from DTCSegmentationLib import Dependencies

    checked = Dependencies.report(Dependencies.check(), Dependencies.DeviceCheck().wait())
    panel.findChild(QtWidgets.QLabel, "dependencyStatusLabel").setText(checked)
    panel.resize(440, panel.sizeHint().height())
    panel.show()
    app.processEvents()
    output.parent.mkdir(parents=True, exist_ok=True)
    if not panel.grab().save(str(output)):
        raise OSError(f"{output}: could not save")
    return output


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=REPO / "Resources" / "Screenshots" / "panel.png")
    p.add_argument("--progress", type=Path, help="progress.jsonl of a training run, drawn in the plot")
    args = p.parse_args()
    print(render(args.output, args.progress))
