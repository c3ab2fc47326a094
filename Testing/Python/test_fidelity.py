"""The stand-ins and the panel against the real API (real_api.py: Slicer's and CTK's headers, slicer/util.py,
PySide6 for Qt): a stand-in must not give a class anything its real class lacks, or the panel's tests pass
where Slicer fails (as `qMRMLPlotWidget.setMRMLPlotChartNode` did, which no Slicer has); and every call the
panel's source makes on its .ui widgets, `slicer.util`, `slicer.app` and `qt` must exist in the real sources,
including the code paths no test runs."""
from __future__ import annotations

import ast
import inspect
import xml.etree.ElementTree as ET

import pytest
import qt_stand_in
import real_api
from conftest import MODULE_DIR, PANEL_MODULES

pytestmark = pytest.mark.skipif(not real_api.available(), reason=f"no Slicer API reference at {real_api.REFERENCE}")

UI = MODULE_DIR / "Resources" / "UI" / "DTCSegmentation.ui"
# the module's files that drive Slicer's GUI: the panel, the module file and its self-test
GUI_FILES = [MODULE_DIR / "DTCSegmentationLib" / f"{name}.py" for name in PANEL_MODULES] + [
    MODULE_DIR / "DTCSegmentation.py", MODULE_DIR / "DTCSegmentationLib" / "SelfTest.py"]
MODULE_FILES = sorted(MODULE_DIR.rglob("*.py"))


def standInClasses() -> list[type]:
    """Every class qt_stand_in gives the panel in place of a real one (its own helpers excluded)."""
    return [cls for cls in vars(qt_stand_in).values()
            if isinstance(cls, type) and cls.__module__ == qt_stand_in.__name__ and cls is not qt_stand_in.Answers]


def instance(cls):
    """An instance made with empty values for the parameters its constructor requires."""
    required = [p for p in inspect.signature(cls).parameters.values() if p.default is p.empty]
    return cls(*["" for _ in required])


def surfaceProblems(cls, realClass: str | None = None) -> list[str]:
    """What the stand-in `cls` defines that the real class (by default of the same name) lacks: a method that
    is no slot, Q_INVOKABLE or Qt method, a property or instance attribute that is no Q_PROPERTY, a
    constant that is not the real enum's value."""
    realClass = realClass or cls.__name__
    api = real_api.api(realClass)
    qtClass = real_api._qt_class(realClass)
    problems = []
    members = {name: inspect.getattr_static(cls, name) for name in dir(cls) if not name.startswith("_")}
    members.update((name, value) for name, value in vars(instance(cls)).items() if not name.startswith("_"))
    for name, member in sorted(members.items()):
        where = f"{cls.__name__}.{name}"
        if isinstance(member, (staticmethod, classmethod)) or inspect.isfunction(member):
            if name not in api.callables():
                kind = "a property" if name in api.properties else "not there"
                problems.append(f"{where}: a method of the stand-in, {kind} in {realClass}")
        elif isinstance(member, int) and not isinstance(member, bool) and hasattr(qtClass, name):
            real = getattr(qtClass, name)
            if getattr(real, "value", real) != member:
                problems.append(f"{where} = {member}: {realClass}.{name} is {getattr(real, 'value', real)}")
        elif name not in api.properties:
            problems.append(f"{where}: an attribute of the stand-in, no property of {realClass}")
    unread = f" (nor of {', '.join(api.unresolved)}, which the reference lacks)" if api.unresolved else ""
    return [problem + unread for problem in problems]


def test_every_member_of_a_stand_in_exists_in_its_real_class():
    classes = standInClasses()
    assert {"qMRMLPlotWidget", "qMRMLNodeComboBox", "QComboBox", "qSlicerApplication"} <= {c.__name__ for c in classes}
    problems = [problem for cls in classes for problem in surfaceProblems(cls)]
    assert problems == []


def test_the_check_reports_a_planted_method_property_and_constant():
    class qMRMLPlotWidget(qt_stand_in.qMRMLPlotWidget):  # noqa: N801  (the real class's name)
        def setMRMLPlotChartNode(self, chart):  # what today's Slicer lacks
            pass

        chart = property(lambda self: None)

    class QHeaderView(qt_stand_in.QHeaderView):  # noqa: N801
        Stretch = 2  # ResizeMode's Stretch is 1

    assert surfaceProblems(qt_stand_in.qMRMLPlotWidget) == []
    problems = surfaceProblems(qMRMLPlotWidget)
    assert len(problems) == 2 and "setMRMLPlotChartNode" in problems[1] and "chart" in problems[0]
    assert surfaceProblems(QHeaderView) == ["QHeaderView.Stretch = 2: QHeaderView.Stretch is 1"]


def test_a_stand_in_refuses_at_run_time_what_its_real_class_lacks():
    # what the panel reaches through variables (tables of widget names, combo boxes it makes), which the
    # source check below cannot follow
    label = qt_stand_in.QWidget("status", "QLabel")
    label.text = "ready"
    with pytest.raises(AttributeError, match="QLabel has no property 'plainText'"):
        label.plainText = "ready"
    with pytest.raises(AttributeError, match="QPlainTextEdit has no property 'text'"):
        qt_stand_in.QPlainTextEdit("log").text = "line"
    combo = qt_stand_in.qMRMLNodeComboBox("volumes")
    combo.connect("currentNodeChanged(vtkMRMLNode*)", print)
    with pytest.raises(AttributeError, match="no signal nodeChanged"):
        combo.connect("nodeChanged(vtkMRMLNode*)", print)
    assert combo.addEnabled is False and combo.baseName == ""  # a property never set: its type's default
    with pytest.raises(AttributeError):
        qt_stand_in.qMRMLSegmentationShow3DButton("show3D").setMRMLScene(None)


def test_the_qt_module_and_the_slicer_util_stand_ins_are_real():
    from PySide6 import QtWidgets

    module = qt_stand_in.qtModule(qt_stand_in.Answers())
    for name, value in vars(module).items():
        if isinstance(value, type) and value not in standInClasses():  # the dialogs' static functions
            public = [n for n in vars(value) if not n.startswith("_")]
            assert public and all(hasattr(getattr(QtWidgets, name), n) for n in public), (name, public)
    utilities = real_api.util_functions()
    for name, function in qt_stand_in.utilFunctions(qt_stand_in.Answers()).items():
        assert name in utilities, f"slicer.util has no {name}"
        names, kwargs = real_api.util_parameters(name)
        ours = inspect.signature(function).parameters.values()
        assert [p.name for p in ours if p.kind != p.VAR_KEYWORD] == names, f"{name}'s parameters"
        assert any(p.kind == p.VAR_KEYWORD for p in ours) == kwargs, f"{name}'s **kwargs"


def uiClasses() -> dict[str, str]:
    return {w.get("name"): w.get("class") for w in ET.parse(UI).iter("widget")}


def test_every_connection_in_the_ui_file_is_real_and_every_mrml_widget_gets_the_scene():
    classes = uiClasses()
    connections = [(c.findtext("sender"), c.findtext("signal"), c.findtext("receiver"), c.findtext("slot"))
                   for c in ET.parse(UI).iter("connection")]
    for sender, signal, receiver, slot in connections:
        assert signal in real_api.api(classes[sender]).signals, f"{classes[sender]} has no signal {signal}"
        assert slot.split("(")[0] in real_api.api(classes[receiver]).callables(), f"{classes[receiver]}: {slot}"
    needsScene = {name for name, cls in classes.items() if "setMRMLScene" in real_api.api(cls).callables()}
    receivers = {receiver for sender, signal, receiver, slot in connections if slot == "setMRMLScene(vtkMRMLScene*)"}
    root = next(iter(classes))
    assert receivers == needsScene - {root} and len(receivers) >= 5


# ------------------------------------------------------------------------------- the module's source
def dotted(node) -> str | None:
    """`a.b.c` for an attribute chain of names, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id] + parts[::-1]) if isinstance(node, ast.Name) else None


def sourceProblems(path) -> list[str]:
    """Every use in `path` of a .ui widget (`ui.NAME.MEMBER`), of slicer.util, slicer.app and qt that the
    real sources lack."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    classes, utilities, app = uiClasses(), real_api.util_functions(), real_api.api("qSlicerApplication")
    messageBox = real_api.api("ctkMessageBox").properties
    problems = []
    for node in (n for n in ast.walk(tree) if isinstance(n, ast.Attribute)):
        called = isinstance(parents.get(node), ast.Call) and parents[node].func is node
        call = parents[node] if called else None
        where = f"{path.name} line {node.lineno}"
        chain, owner = dotted(node.value), node.value
        if isinstance(owner, ast.Attribute) and (dotted(owner.value) or "").split(".")[-1] == "ui":
            realClass = classes.get(owner.attr)
            api = real_api.api(realClass) if realClass else None
            if api is None:
                problems.append(f"{where}: ui.{owner.attr} is not in the .ui file")
            elif called and node.attr == "connect":
                signal = call.args[0].value if call.args and isinstance(call.args[0], ast.Constant) else None
                if signal is not None and signal.replace(" ", "") not in api.signals:
                    problems.append(f"{where}: {realClass} has no signal {signal}")
            elif called and node.attr not in api.callables():
                problems.append(f"{where}: {realClass}.{node.attr}() is no slot, Q_INVOKABLE or Qt method")
            elif not called and node.attr not in api.properties and node.attr not in api.callables():
                problems.append(f"{where}: {realClass} has no property {node.attr}")
        elif chain == "slicer.util":
            if node.attr not in utilities:
                problems.append(f"{where}: slicer.util has no {node.attr}")
            elif called and isinstance(utilities[node.attr], ast.FunctionDef):
                names, kwargs = real_api.util_parameters(node.attr)
                toMessageBox = real_api.forwards_kwargs_to(node.attr, "messageBox")
                for keyword in (k.arg for k in call.keywords if k.arg):
                    if keyword not in names and not (kwargs and toMessageBox and keyword in messageBox):
                        problems.append(f"{where}: slicer.util.{node.attr} takes no {keyword}=")
        elif chain == "slicer.app":
            if node.attr not in app.properties and node.attr not in app.callables():
                problems.append(f"{where}: slicer.app has no {node.attr}")
        elif isinstance(owner, ast.Call) and dotted(owner.func) and dotted(owner.func).startswith("slicer.app."):
            returned = app.returns.get(dotted(owner.func).split(".")[-1])
            result = real_api.api(returned) if returned else None
            if result is None or (node.attr not in result.properties and node.attr not in result.callables()):
                problems.append(f"{where}: {dotted(owner.func)}() gives no {node.attr}")
        elif chain == "qt" and real_api._qt_class(node.attr) is None:
            problems.append(f"{where}: qt.{node.attr} is not in Qt")
        elif chain and chain.startswith("qt.") and chain.count(".") == 1:
            qtClass = real_api._qt_class(chain.split(".")[1])
            if qtClass is None or not hasattr(qtClass, node.attr):
                problems.append(f"{where}: {chain}.{node.attr} is not in Qt")
    return problems


def test_every_call_the_module_makes_on_slicer_and_its_widgets_exists():
    assert all(path.is_file() for path in GUI_FILES)
    problems = [problem for path in MODULE_FILES for problem in sourceProblems(path)]
    assert problems == []


def test_the_source_check_reports_calls_that_slicer_lacks(tmp_path):
    planted = tmp_path / "Planted.py"
    planted.write_text(
        "import qt\nimport slicer\n\n"
        "def follow(self, ui, chart):\n"
        "    self.ui.plotWidget.setMRMLPlotChartNode(chart)\n"  # the method no Slicer has
        "    ui.trainingStatusLabel.plainText = 'x'\n"  # a QLabel's text is `text`
        "    ui.trainButton.connect('pressed(bool)', print)\n"  # QPushButton's pressed() takes nothing
        "    slicer.util.errorDisplay('failed', details='...')\n"  # ctkMessageBox's is detailedText
        "    slicer.util.errorDisplay('failed', detailedText='...')\n"  # fine
        "    slicer.util.showErrorDialog('failed')\n"
        "    slicer.app.commandOptions().noGui\n"
        "    qt.QHeaderView.Stretched\n"
        "    qt.QTimerr()\n", encoding="utf-8")
    problems = sourceProblems(planted)
    assert len(problems) == 8, problems
    for expected in ("setMRMLPlotChartNode", "no property plainText", "no signal pressed(bool)", "takes no details=",
                     "no showErrorDialog", "gives no noGui", "Stretched", "qt.QTimerr"):
        assert any(expected in p for p in problems), expected
