"""Stand-ins for what cannot exist here: Slicer's Qt GUI (PythonQt, CTK and the qMRML widgets) and the
application object. No machine of this project has a Slicer GUI, so the panel (DTCSegmentationLib/Widget.py)
runs in the tests against these: plain Python objects with PythonQt's surface as the panel uses it
(properties as attributes, `connect("signal(args)", slot)`, signals on programmatic changes as Qt emits
them, `blockSignals`), built from the real .ui file with its connections, over a real MRML scene from
slicer-core. They check the panel's own code (its wiring, state and calls into the logic), not Qt's
behaviour or looks.

They hold to the real API (real_api.py: Slicer's and CTK's headers, PySide6 for Qt): every public name a
stand-in class defines is checked by test_fidelity.py, and at run time a widget refuses a property, or a
signal to connect to, that its real class lacks, as the real panel would fail (PythonQt stores an unknown
attribute without effect and does not connect an unknown signal). Names starting with `_` and the module's
functions (`emit`, `activate`) are the stand-ins' own machinery, which the panel cannot reach.

    install(monkeypatch, answers, slicerHome)   # then import DTCSegmentationLib.Widget (test_panel.py's `gui`)
"""
from __future__ import annotations

import sys
import types
import xml.etree.ElementTree as ET

import real_api
import slicer

DEFAULTS = {"QString": "", "bool": False, "int": 0, "double": 0.0, "QStringList": []}  # a property never set


class QObject:
    """Properties are attributes, checked against the real class; `connect` records slots for `emit`."""

    def __init__(self, name: str = "", realClass: str | None = None):
        object.__setattr__(self, "_realClass", realClass or type(self).__name__)
        object.__setattr__(self, "_slots", {})
        object.__setattr__(self, "_blocked", False)
        if name:
            self.objectName = name

    def _api(self):
        return real_api.api(self._realClass) if real_api.available() or self._realClass[0] == "Q" else None

    def __setattr__(self, name, value):
        api = self._api()
        if not name.startswith("_") and api is not None and name not in api.properties:
            raise AttributeError(f"{self._realClass} has no property {name!r}")
        object.__setattr__(self, name, value)

    def __getattr__(self, name):  # only for names not set: a real property's default, else what Python says
        api = None if name.startswith("_") else self._api()
        if api is not None and name in api.properties:
            return DEFAULTS.get(api.properties[name])
        raise AttributeError(f"{self._realClass} has no attribute {name!r}")

    def connect(self, signal: str, slot) -> None:
        api = self._api()
        signal = signal.replace(" ", "")
        if api is not None and signal not in api.signals:
            raise AttributeError(f"{self._realClass} has no signal {signal}: PythonQt would not connect it")
        self._slots.setdefault(signal, []).append(slot)

    def blockSignals(self, block: bool) -> bool:
        previous = self._blocked
        object.__setattr__(self, "_blocked", bool(block))
        return previous

    def _emit(self, signal: str, *args) -> None:
        if not self._blocked:
            for slot in list(self._slots.get(signal, [])):
                slot(*args)


class QWidget(QObject):
    def __init__(self, name="", realClass=None):
        super().__init__(name, realClass)
        self.enabled, self.toolTip = True, ""


def emit(sender: QObject, signal: str, *args) -> None:
    """What Qt does when a signal fires (a test's stand-in for a user's action)."""
    sender._emit(signal, *args)


class qMRMLWidget(QWidget):
    def setMRMLScene(self, scene) -> None:
        object.__setattr__(self, "_scene", scene)
        self._emit("mrmlSceneChanged(vtkMRMLScene*)", scene)

    def mrmlScene(self):
        return getattr(self, "_scene", None)


class QPushButton(QWidget):
    def click(self) -> None:
        if self.enabled:
            self._emit("clicked()")


class QSpinBox(QWidget):
    _SIGNAL, _TYPE = "valueChanged(int)", int

    @property
    def value(self):
        return self.__dict__.get("_value", self._TYPE())

    @value.setter
    def value(self, value):
        value = self._TYPE(value)
        if value != self.value:
            object.__setattr__(self, "_value", value)
            self._emit(self._SIGNAL, value)


class QDoubleSpinBox(QSpinBox):
    _SIGNAL, _TYPE = "valueChanged(double)", float


class QCheckBox(QWidget):
    @property
    def checked(self):
        return self.__dict__.get("_checked", False)

    @checked.setter
    def checked(self, value):
        if bool(value) != self.checked:
            object.__setattr__(self, "_checked", bool(value))
            self._emit("toggled(bool)", bool(value))


class QComboBox(QWidget):
    def __init__(self, name="", realClass=None):
        object.__setattr__(self, "_items", [])  # [text, data, tooltip]
        object.__setattr__(self, "_current", -1)
        super().__init__(name, realClass)

    count = property(lambda self: len(self._items))
    currentText = property(lambda self: self._items[self._current][0] if self._current >= 0 else "")
    currentData = property(lambda self: self._items[self._current][1] if self._current >= 0 else None)
    currentIndex = property(lambda self: self._current, lambda self, index: self.setCurrentIndex(index))

    def addItem(self, text, data=None):
        self._items.append([str(text), data, None])
        if self._current < 0:
            self.setCurrentIndex(0)

    def clear(self):
        before, hadCurrent = self.currentText, self._current >= 0
        object.__setattr__(self, "_items", [])
        object.__setattr__(self, "_current", -1)
        if hadCurrent:
            self._changed(before)

    def findText(self, text):
        return next((i for i, item in enumerate(self._items) if item[0] == text), -1)

    def findData(self, data):
        return next((i for i, item in enumerate(self._items) if item[1] == data), -1)

    def itemText(self, index):
        return self._items[index][0]

    def itemData(self, index, role=None):
        return self._items[index][2 if role == Qt.ToolTipRole else 1]

    def setItemData(self, index, value, role=None):
        self._items[index][2 if role == Qt.ToolTipRole else 1] = value

    def setCurrentText(self, text):
        if self.findText(text) >= 0:
            self.setCurrentIndex(self.findText(text))

    def setCurrentIndex(self, index):
        index = index if 0 <= index < len(self._items) else -1  # out of range: no current item, as in Qt
        if index != self._current:
            before = self.currentText
            object.__setattr__(self, "_current", index)
            self._changed(before)

    def _changed(self, textBefore):
        self._emit("currentIndexChanged(int)", self._current)
        if self.currentText != textBefore:
            self._emit("currentTextChanged(QString)", self.currentText)


def activate(combo: QComboBox, index: int) -> None:
    """A user's choice of an item: `activated(int)` is Qt's signal for those only."""
    combo.setCurrentIndex(index)
    combo._emit("activated(int)", index)


class QPlainTextEdit(QWidget):
    def appendPlainText(self, line):
        self.plainText = f"{self.plainText}\n{line}" if self.plainText else line


class QTableWidgetItem:
    def __init__(self, text):
        self._text, self._toolTip = text, ""

    def text(self):
        return self._text

    def setToolTip(self, text):
        self._toolTip = text

    def toolTip(self):
        return self._toolTip


class QHeaderView(QWidget):
    Stretch, ResizeToContents = 1, 3  # QHeaderView::ResizeMode

    def setSectionResizeMode(self, *args):
        pass


class QTableWidget(QWidget):
    def __init__(self, name="", realClass=None):
        object.__setattr__(self, "_cells", [])
        object.__setattr__(self, "_currentRow", -1)
        super().__init__(name, realClass)

    rowCount = property(lambda self: len(self._cells), lambda self, count: self.setRowCount(count))

    def horizontalHeader(self):
        return QHeaderView()

    def insertRow(self, row):
        self._cells.insert(row, {})

    def removeRow(self, row):
        del self._cells[row]

    def setRowCount(self, count):
        object.__setattr__(self, "_cells", (self._cells + [{} for _ in range(count)])[:count])

    def setCellWidget(self, row, column, widget):
        self._cells[row][column] = widget

    def cellWidget(self, row, column):
        return self._cells[row].get(column)

    def setItem(self, row, column, item):
        self._cells[row][column] = item

    def item(self, row, column):
        return self._cells[row].get(column)

    def setCurrentCell(self, row, column):
        previous = self._currentRow
        object.__setattr__(self, "_currentRow", row)
        if row != previous:  # as Qt: the signal for a user's click and for the program's choice alike
            self._emit("currentCellChanged(int,int,int,int)", row, column, previous, column)

    def currentRow(self):
        return self._currentRow


class qMRMLNodeComboBox(QWidget):
    """A node selector over the real scene; with `noneEnabled` off it selects the first node, as Slicer's."""

    def __init__(self, name="", realClass=None):
        super().__init__(name, realClass)
        self.nodeTypes, self.noneEnabled = [], False

    def setMRMLScene(self, scene):
        object.__setattr__(self, "_scene", scene)
        if not self.noneEnabled and self.currentNode() is None:
            nodes = [n for t in self.nodeTypes for n in slicer.util.getNodesByClass(t)]
            self.setCurrentNode(nodes[0] if nodes else None)

    def mrmlScene(self):
        return self.__dict__.get("_scene")

    def currentNode(self):
        return self.__dict__.get("_node")

    def setCurrentNode(self, node):
        if node is not self.currentNode():
            object.__setattr__(self, "_node", node)
            self._emit("currentNodeChanged(vtkMRMLNode*)", node)


class qMRMLCheckableNodeComboBox(qMRMLNodeComboBox):
    def setMRMLScene(self, scene):
        object.__setattr__(self, "_scene", scene)

    def checkedNodes(self):
        return list(self.__dict__.get("_checked", []))

    def setCheckState(self, node, state):
        wanted = [n for n in self.checkedNodes() if n is not node] + ([node] if state == Qt.Checked else [])
        if wanted != self.checkedNodes():
            object.__setattr__(self, "_checked", wanted)
            self._emit("checkedNodesChanged()")


class qMRMLPlotWidget(qMRMLWidget):
    def setMRMLPlotViewNode(self, viewNode):
        object.__setattr__(self, "_viewNode", viewNode)

    def mrmlPlotViewNode(self):
        return self.__dict__.get("_viewNode")


class qMRMLSegmentationShow3DButton(QPushButton):
    def setSegmentationNode(self, node):
        object.__setattr__(self, "_segmentation", node)

    def segmentationNode(self):
        return self.__dict__.get("_segmentation")


class qMRMLSegmentEditorWidget(qMRMLWidget):
    """The Segment Editor module's editor (its Python widget's `editor`)."""

    def setSegmentationNode(self, node):
        object.__setattr__(self, "_segmentation", node)

    def segmentationNode(self):
        return self.__dict__.get("_segmentation")

    def setSourceVolumeNode(self, node):
        object.__setattr__(self, "_source", node)

    def sourceVolumeNode(self):
        return self.__dict__.get("_source")


class QTimer(QObject):
    """Never fires by itself: a test calls `panel.onTimer()` as the event loop would."""

    active = property(lambda self: self.__dict__.get("_active", False))

    def setInterval(self, ms):
        object.__setattr__(self, "_interval", ms)

    def start(self):
        object.__setattr__(self, "_active", True)

    def stop(self):
        object.__setattr__(self, "_active", False)


class Qt:
    Unchecked, Checked = 0, 2  # Qt::CheckState
    ToolTipRole = 3  # Qt::ItemDataRole


class QLineEdit(QWidget):
    Normal = 0  # QLineEdit::EchoMode


class QClipboard(QObject):
    def setText(self, text, mode=None):
        object.__setattr__(self, "_text", text)

    def text(self, mode=None):
        return self.__dict__.get("_text", "")


class qSlicerCommandOptions:
    def __init__(self, noMainWindow: bool = False):
        self.noMainWindow = noMainWindow  # read-only in Slicer


class qSlicerApplication(QObject):
    def __init__(self, slicerHome: str):
        super().__init__()
        object.__setattr__(self, "slicerHome", slicerHome)  # read-only in Slicer
        object.__setattr__(self, "_options", qSlicerCommandOptions())

    def commandOptions(self):
        return self._options


CLASSES = {cls.__name__: cls for cls in (qMRMLWidget, QPushButton, QSpinBox, QDoubleSpinBox, QCheckBox, QComboBox,
                                         QPlainTextEdit, QTableWidget, qMRMLNodeComboBox, qMRMLCheckableNodeComboBox,
                                         qMRMLPlotWidget, qMRMLSegmentationShow3DButton)}
CONVERTERS = {"number": float, "bool": lambda text: text == "true", "string": str, "cstring": str}


def loadUI(path):
    """The .ui file's widgets as stand-ins with the file's properties, combo-box items and connections
    (the root's `mrmlSceneChanged` to each MRML widget's `setMRMLScene`, as in Slicer)."""
    tree = ET.parse(path)
    elements = list(tree.iter("widget"))
    widgets = {}
    for element in elements:
        realClass = element.get("class")
        widget = CLASSES.get(realClass, QWidget)(element.get("name"), realClass)
        for prop in element.findall("property"):
            value = next(iter(prop), None)
            if value is not None and value.tag in CONVERTERS:
                setattr(widget, prop.get("name"), CONVERTERS[value.tag](value.text or ""))
            elif value is not None and value.tag == "stringlist":
                setattr(widget, prop.get("name"), [s.text for s in value])
        for item in element.findall("item"):
            widget.addItem(item.findtext("property/string"))
        widgets[element.get("name")] = widget
    for connection in tree.iter("connection"):
        receiver, slot = widgets[connection.findtext("receiver")], connection.findtext("slot")
        widgets[connection.findtext("sender")].connect(connection.findtext("signal"),
                                                       getattr(receiver, slot.split("(")[0]))
    root = widgets[elements[0].get("name")]
    object.__setattr__(root, "_children", widgets)
    return root


class Answers:
    """What the user answers to the dialogs, and what the panel showed them."""

    def __init__(self):
        self.openFile = self.saveFile = self.text = ""
        self.confirm = True
        self.errors: list[str] = []
        self.clipboard = QClipboard()


def qtModule(answers: Answers) -> types.ModuleType:
    """The `qt` module as the panel imports it: the stand-in classes, and the dialogs answering from `answers`."""
    qt = types.ModuleType("qt")
    for cls in (QTimer, QComboBox, QDoubleSpinBox, QTableWidgetItem, QHeaderView, QLineEdit, Qt):
        setattr(qt, cls.__name__, cls)
    qt.QFileDialog = type("QFileDialog", (), {"getOpenFileName": staticmethod(lambda *a: answers.openFile),
                                              "getSaveFileName": staticmethod(lambda *a: answers.saveFile)})
    qt.QInputDialog = type("QInputDialog", (), {"getText": staticmethod(lambda *a: answers.text)})
    qt.QApplication = type("QApplication", (), {"clipboard": staticmethod(lambda: answers.clipboard)})
    return qt


def utilFunctions(answers: Answers) -> dict:
    """The application-only functions of slicer.util, with the real ones' parameters (test_fidelity.py)."""

    def errorDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
        answers.errors.append(text)

    def confirmYesNoDisplay(text, windowTitle=None, parent=None, **kwargs):
        return answers.confirm

    def confirmOkCancelDisplay(text, windowTitle=None, parent=None, **kwargs):
        return answers.confirm

    def childWidgetVariables(widget):
        return types.SimpleNamespace(**widget._children)

    def setSliceViewerLayers(background="keep-current", foreground="keep-current", label="keep-current",
                             foregroundOpacity=None, labelOpacity=None, fit=False, rotateToVolumePlane=False):
        pass

    def getModuleWidget(module):
        return types.SimpleNamespace(editor=answers.segmentEditor)  # SegmentEditor.py's widget and its editor

    def selectModule(module):
        pass

    return {f.__name__: f for f in (loadUI, errorDisplay, confirmYesNoDisplay, confirmOkCancelDisplay,
                                    childWidgetVariables, setSliceViewerLayers, getModuleWidget, selectModule)}


def install(monkeypatch, answers: Answers, slicerHome: str):
    """Put the stand-ins where the panel imports them: the `qt`, `ctk` and `slicer.i18n` modules, and the
    application-only parts of `slicer` (app, GUI functions of slicer.util, qMRMLNodeComboBox)."""
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    for name, module in (("qt", qtModule(answers)), ("ctk", types.ModuleType("ctk")), ("slicer.i18n", i18n)):
        monkeypatch.setitem(sys.modules, name, module)
    answers.segmentEditor = qMRMLSegmentEditorWidget()
    monkeypatch.setattr(slicer, "app", qSlicerApplication(slicerHome), raising=False)
    monkeypatch.setattr(slicer, "qMRMLNodeComboBox", qMRMLNodeComboBox, raising=False)
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(), raising=False)
    for name, function in utilFunctions(answers).items():
        monkeypatch.setattr(slicer.util, name, function, raising=False)
