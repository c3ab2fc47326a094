"""Stand-ins for what cannot exist here: Slicer's Qt GUI (PythonQt, CTK and the qMRML widgets) and the
application object. No machine of this project has a Slicer GUI, so the panel (DTCSegmentationLib/Widget.py)
runs in the tests against these: plain Python objects with PythonQt's surface as the panel uses it
(properties as attributes, `connect("signal(args)", slot)`, signals on programmatic changes as Qt emits
them, `blockSignals`), built from the real .ui file, over a real MRML scene from slicer-core. They check
the panel's own code (its wiring, state and calls into the logic), not Qt's behaviour or looks.

    install(monkeypatch, answers, slicerHome)   # then import DTCSegmentationLib.Widget (test_panel.py's `gui`)
"""
from __future__ import annotations

import types
import xml.etree.ElementTree as ET

import slicer

# Qt enums the panel uses
Checked, Unchecked, ToolTipRole = 2, 0, 3


class Widget:
    """QWidget: properties are attributes; `connect` records slots, `emit` calls them unless blocked."""

    def __init__(self, name: str = ""):
        self.objectName, self.enabled, self.toolTip, self.text = name, True, "", ""
        self._slots: dict[str, list] = {}
        self._blocked = False

    def connect(self, signal: str, slot) -> None:
        self._slots.setdefault(signal, []).append(slot)

    def emit(self, signal: str, *args) -> None:
        if not self._blocked:
            for slot in list(self._slots.get(signal, [])):
                slot(*args)

    def blockSignals(self, block: bool) -> bool:
        previous, self._blocked = self._blocked, bool(block)
        return previous

    def setMRMLScene(self, scene) -> None:
        self.scene = scene


class QPushButton(Widget):
    def click(self) -> None:
        if self.enabled:
            self.emit("clicked()")


class QSpinBox(Widget):
    SIGNAL = "valueChanged(int)"

    def __init__(self, name=""):
        self._value = 0
        super().__init__(name)

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, value):
        value = type(self._value)(value)
        if value != self._value:
            self._value = value
            self.emit(self.SIGNAL, value)


class QDoubleSpinBox(QSpinBox):
    SIGNAL = "valueChanged(double)"

    def __init__(self, name=""):
        super().__init__(name)
        self._value = float(self._value)


class QCheckBox(Widget):
    def __init__(self, name=""):
        self._checked = False
        super().__init__(name)

    @property
    def checked(self):
        return self._checked

    @checked.setter
    def checked(self, value):
        if bool(value) != self._checked:
            self._checked = bool(value)
            self.emit("toggled(bool)", self._checked)


class QComboBox(Widget):
    def __init__(self, name=""):
        self.items: list[list] = []  # [text, data, tooltip]
        self.currentIndex = -1
        super().__init__(name)

    count = property(lambda self: len(self.items))
    currentText = property(lambda self: self.items[self.currentIndex][0] if self.currentIndex >= 0 else "")
    currentData = property(lambda self: self.items[self.currentIndex][1] if self.currentIndex >= 0 else None)

    def addItem(self, text, data=None):
        self.items.append([str(text), data, None])
        if self.currentIndex < 0:
            self.setCurrentIndex(0)

    def clear(self):
        before, hadCurrent = self.currentText, self.currentIndex >= 0
        self.items, self.currentIndex = [], -1
        if hadCurrent:
            self._changed(before)

    def findText(self, text):
        return next((i for i, item in enumerate(self.items) if item[0] == text), -1)

    def findData(self, data):
        return next((i for i, item in enumerate(self.items) if item[1] == data), -1)

    def itemData(self, index, role=None):
        return self.items[index][2 if role == ToolTipRole else 1]

    def setItemData(self, index, value, role=None):
        self.items[index][2 if role == ToolTipRole else 1] = value

    def setCurrentText(self, text):
        if self.findText(text) >= 0:
            self.setCurrentIndex(self.findText(text))

    def setCurrentIndex(self, index):
        index = index if 0 <= index < len(self.items) else -1  # out of range: no current item, as in Qt
        if index != self.currentIndex:
            before = self.currentText
            self.currentIndex = index
            self._changed(before)

    def activate(self, index):
        """A user's choice of an item: `activated(int)` is Qt's signal for those only."""
        self.setCurrentIndex(index)
        self.emit("activated(int)", index)

    def _changed(self, textBefore):
        self.emit("currentIndexChanged(int)", self.currentIndex)
        if self.currentText != textBefore:
            self.emit("currentTextChanged(QString)", self.currentText)


class QPlainTextEdit(Widget):
    def appendPlainText(self, line):
        self.text = f"{self.text}\n{line}" if self.text else line


class QTableWidgetItem:
    def __init__(self, text):
        self._text = text

    def text(self):
        return self._text


class QTableWidget(Widget):
    def __init__(self, name=""):
        self.cells: list[dict] = []
        self._currentRow = -1
        super().__init__(name)

    rowCount = property(lambda self: len(self.cells))

    def horizontalHeader(self):
        return types.SimpleNamespace(setSectionResizeMode=lambda *args: None)

    def insertRow(self, row):
        self.cells.insert(row, {})

    def removeRow(self, row):
        del self.cells[row]

    def setRowCount(self, count):
        self.cells = (self.cells + [{} for _ in range(count)])[:count]

    def setCellWidget(self, row, column, widget):
        self.cells[row][column] = widget

    def cellWidget(self, row, column):
        return self.cells[row].get(column)

    def setItem(self, row, column, item):
        self.cells[row][column] = item

    def item(self, row, column):
        return self.cells[row].get(column)

    def setCurrentCell(self, row, column):
        self._currentRow = row

    def currentRow(self):
        return self._currentRow


class qMRMLNodeComboBox(Widget):
    """A node selector over the real scene; with `noneEnabled` off it selects the first node, as Slicer's."""

    def __init__(self, name=""):
        self.nodeTypes, self.noneEnabled, self.scene, self._node = [], False, None, None
        super().__init__(name)

    def setMRMLScene(self, scene):
        self.scene = scene
        if not self.noneEnabled and self._node is None:
            nodes = [n for t in self.nodeTypes for n in slicer.util.getNodesByClass(t)]
            self.setCurrentNode(nodes[0] if nodes else None)

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node):
        if node is not self._node:
            self._node = node
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)


class qMRMLCheckableNodeComboBox(qMRMLNodeComboBox):
    def __init__(self, name=""):
        self._checkedNodes: list = []
        super().__init__(name)

    def setMRMLScene(self, scene):
        self.scene = scene

    def checkedNodes(self):
        return list(self._checkedNodes)

    def setCheckState(self, node, state):
        wanted = [n for n in self._checkedNodes if n is not node] + ([node] if state == Checked else [])
        if wanted != self._checkedNodes:
            self._checkedNodes = wanted
            self.emit("checkedNodesChanged()")


class qMRMLPlotWidget(Widget):
    def setMRMLPlotChartNode(self, chart):
        self.chart = chart


class qMRMLSegmentationShow3DButton(Widget):
    def setSegmentationNode(self, node):
        self.segmentationNode = node


class QTimer(Widget):
    """Never fires by itself: a test calls `panel.onTimer()` as the event loop would."""

    active = False

    def setInterval(self, ms):
        self.interval = ms

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


CLASSES = {cls.__name__: cls for cls in (QPushButton, QSpinBox, QDoubleSpinBox, QCheckBox, QComboBox,
                                         QPlainTextEdit, QTableWidget, qMRMLNodeComboBox,
                                         qMRMLCheckableNodeComboBox, qMRMLPlotWidget, qMRMLSegmentationShow3DButton)}
CONVERTERS = {"number": float, "bool": lambda text: text == "true", "string": str, "cstring": str}


def loadUI(path):
    """The .ui file's widgets as stand-ins with the file's properties and combo-box items; the root's
    `setMRMLScene` passes the scene on to the MRML widgets, as the file's connections do in Slicer."""
    elements = list(ET.parse(path).iter("widget"))
    widgets = {}
    for element in elements:
        widget = CLASSES.get(element.get("class"), Widget)(element.get("name"))
        for prop in element.findall("property"):
            value = next(iter(prop), None)
            if value is not None and value.tag in CONVERTERS:
                setattr(widget, prop.get("name"), CONVERTERS[value.tag](value.text or ""))
            elif value is not None and value.tag == "stringlist":
                setattr(widget, prop.get("name"), [s.text for s in value])
        for item in element.findall("item"):
            widget.addItem(item.findtext("property/string"))
        widgets[element.get("name")] = widget
    root = widgets[elements[0].get("name")]
    root.children = widgets
    mrml = (qMRMLNodeComboBox, qMRMLPlotWidget, qMRMLSegmentationShow3DButton)
    root.setMRMLScene = lambda scene: [w.setMRMLScene(scene) for w in widgets.values() if isinstance(w, mrml)]
    return root


class Answers:
    """What the user answers to the dialogs, and what the panel showed them."""

    def __init__(self):
        self.openFile = self.saveFile = self.text = ""
        self.confirm = True
        self.errors: list[str] = []
        self.clipboard = ""


def install(monkeypatch, answers: Answers, slicerHome: str):
    """Put the stand-ins where the panel imports them: the `qt`, `ctk` and `slicer.i18n` modules, and the
    application-only parts of `slicer` (app, GUI helpers of slicer.util, qMRMLNodeComboBox)."""
    qt = types.ModuleType("qt")
    for cls in (QTimer, QComboBox, QDoubleSpinBox, QTableWidgetItem):
        setattr(qt, cls.__name__, cls)
    qt.Qt = types.SimpleNamespace(Checked=Checked, Unchecked=Unchecked, ToolTipRole=ToolTipRole)
    qt.QHeaderView = types.SimpleNamespace(Stretch=1, ResizeToContents=3)
    qt.QLineEdit = types.SimpleNamespace(Normal=0)
    qt.QFileDialog = types.SimpleNamespace(getOpenFileName=lambda *a: answers.openFile,
                                           getSaveFileName=lambda *a: answers.saveFile)
    qt.QInputDialog = types.SimpleNamespace(getText=lambda *a: answers.text)
    clipboard = types.SimpleNamespace(setText=lambda text: setattr(answers, "clipboard", text))
    qt.QApplication = types.SimpleNamespace(clipboard=lambda: clipboard)
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    for name, module in (("qt", qt), ("ctk", types.ModuleType("ctk")), ("slicer.i18n", i18n)):
        monkeypatch.setitem(__import__("sys").modules, name, module)
    options = types.SimpleNamespace(noMainWindow=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(commandOptions=lambda: options, slicerHome=slicerHome),
                        raising=False)
    monkeypatch.setattr(slicer, "qMRMLNodeComboBox", qMRMLNodeComboBox, raising=False)
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(), raising=False)
    util = slicer.util
    monkeypatch.setattr(util, "loadUI", loadUI)
    monkeypatch.setattr(util, "childWidgetVariables", lambda root: types.SimpleNamespace(**root.children))
    monkeypatch.setattr(util, "setSliceViewerLayers", lambda **kwargs: None)
    monkeypatch.setattr(util, "errorDisplay", lambda text, **kwargs: answers.errors.append(text))
    monkeypatch.setattr(util, "confirmYesNoDisplay", lambda text, **kwargs: answers.confirm)
    monkeypatch.setattr(util, "selectModule", lambda name: None)
