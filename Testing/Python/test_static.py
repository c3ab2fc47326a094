"""Static checks that need no Slicer: packaging lists, .ui names used by the widget, the batch script's
documented options, the extension description, the logic's import-time dependencies, and the offscreen
rendering of the panel."""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from conftest import MODULE_DIR, PANEL_MODULES, REPO

UI = MODULE_DIR / "Resources" / "UI" / "DTCSegmentation.ui"
PANEL_FILES = [MODULE_DIR / "DTCSegmentationLib" / f"{name}.py" for name in PANEL_MODULES]
PARAMETER_WIDGETS = MODULE_DIR / "DTCSegmentationLib" / "ParameterWidgets.py"


def panelSource() -> str:
    return "\n".join(path.read_text() for path in PANEL_FILES)


def cmakeList(text: str, variable: str) -> list[str]:
    block = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S).group(1)
    return [line.split("#")[0].strip().replace("${MODULE_NAME}", "DTCSegmentation")
            for line in block.splitlines() if line.split("#")[0].strip()]


def test_every_module_file_is_listed_in_cmake_and_every_listed_file_exists():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    listed = set(cmakeList(text, "MODULE_PYTHON_SCRIPTS")) | set(cmakeList(text, "MODULE_PYTHON_RESOURCES"))
    present = {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.name != "CMakeLists.txt"}
    assert present - listed == set(), "files Slicer would not package"
    assert listed - present == set(), "listed files that do not exist (configure would fail)"
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text


def uiWidgets() -> dict[str, str]:
    return {w.get("name"): w.get("class") for w in ET.parse(UI).iter("widget")}


FITTING = [  # (name pattern, classes a widget of that name may have)
    (r"SpinBox$", {"QSpinBox", "QDoubleSpinBox", "ctkDoubleSpinBox"}),
    (r"CollapsibleButton$", {"ctkCollapsibleButton"}),
    (r"GroupBox$", {"ctkCollapsibleGroupBox", "QGroupBox"}),
    (r"show3DButton$", {"qMRMLSegmentationShow3DButton"}),
    (r"Button$", {"QPushButton"}),
    (r"unlabeledSelector$", {"qMRMLCheckableNodeComboBox"}),
    (r"Selector$", {"qMRMLNodeComboBox"}),
    (r"ComboBox$", {"QComboBox"}),
    (r"Label$", {"QLabel"}),
    (r"Table$", {"QTableWidget"}),
    (r"CheckBox$", {"QCheckBox"}),
    (r"LineEdit$", {"QLineEdit"}),
    (r"TextEdit$", {"QPlainTextEdit"}),
    (r"ProgressBar$", {"QProgressBar"}),
    (r"plotWidget$", {"qMRMLPlotWidget"}),
]


def test_every_ui_name_the_widget_uses_exists_with_a_fitting_class():
    source = panelSource()
    used = set(re.findall(r"\bui\.([A-Za-z_]\w*)", source))
    used |= set(re.findall(r'\(\s*"(\w+)",\s*"(?:value|text|number|checked)"\s*\)', source))
    used |= set(re.findall(r'"(\w+(?:SpinBox|Table|Button|Selector|GroupBox|LineEdit))"', source))
    widgets = uiWidgets()
    assert len(used) > 30
    for name in sorted(used):
        assert name in widgets, f"ui.{name} is not in {UI.name}"
        allowed = next((classes for pattern, classes in FITTING if re.search(pattern, name)), None)
        assert allowed is not None, f"no class rule for {name}"
        assert widgets[name] in allowed, f"{name} is a {widgets[name]}, expected one of {allowed}"


def test_every_text_the_panel_shows_is_translatable():
    # Slicer's i18n: a text shown to users goes through `_()` (slicer.i18n.tr), with placeholders filled by
    # format() after the lookup; an f-string or a bare literal would stay English in every language.
    trees = [ast.parse(path.read_text()) for path in PANEL_FILES]
    exempt = set()
    for node in (node for tree in trees for node in ast.walk(tree)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_":
            exempt |= {id(sub) for sub in ast.walk(node)}
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node):
            exempt.add(id(node.body[0].value))
    words = [(path.name, node.lineno, node.value) for path, tree in zip(PANEL_FILES, trees) for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in exempt
             and re.search(r"[A-Za-z]{2,}\s+[A-Za-z]{2,}", node.value)]
    assert words == [], "texts not wrapped in _(): " + ", ".join(f"{f} line {n}: {v!r}" for f, n, v in words)
    assert len(exempt) > 40  # the check saw the wrapped texts


def widgetTables() -> dict:
    """WIDGET_KINDS, TRAINING_FIELDS and SEGMENT_FIELDS as syntax trees: ParameterWidgets.py imports Slicer's
    Qt, which does not exist here, so its tables are read from the source."""
    tables = {}
    for node in ast.parse(PARAMETER_WIDGETS.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("WIDGET_KINDS", "TRAINING_FIELDS", "SEGMENT_FIELDS"):
                tables[node.targets[0].id] = node.value
    return tables


def test_every_widget_kind_the_field_tables_use_can_be_wired_read_and_shown():
    # A kind missing from WIDGET_KINDS would raise KeyError while the panel is built: the module would not open.
    tables = widgetTables()
    kinds = {key.value for key in tables["WIDGET_KINDS"].keys}
    assert all(len(entry.elts) == 3 for entry in tables["WIDGET_KINDS"].values)  # signal, read, show
    used = {entry.elts[1].value for name in ("TRAINING_FIELDS", "SEGMENT_FIELDS") for entry in tables[name].values}
    assert used and used <= kinds, f"kinds without wiring: {used - kinds}"


def test_every_parameter_combo_box_offers_exactly_the_values_its_parameter_accepts():
    # An item the parameters refuse fails only when a user picks it; a missing one hides an option.
    from DTCSegmentationLib.Parameters import (DEVICES, MODES, ORIENTATION_COUNTS, PRECISIONS, RECIPES,
                                               TRAINING_PRECISIONS, WINDOW_SIZES)

    accepted = {("TRAINING_FIELDS", "recipe"): RECIPES, ("TRAINING_FIELDS", "device"): DEVICES,
                ("TRAINING_FIELDS", "precision"): tuple(TRAINING_PRECISIONS),
                ("SEGMENT_FIELDS", "device"): DEVICES, ("SEGMENT_FIELDS", "mode"): MODES,
                ("SEGMENT_FIELDS", "windowSize"): WINDOW_SIZES, ("SEGMENT_FIELDS", "orientations"): ORIENTATION_COUNTS,
                ("SEGMENT_FIELDS", "precision"): PRECISIONS}
    tables = widgetTables()
    combos = {(table, key.value): value.elts[0].value for table in ("TRAINING_FIELDS", "SEGMENT_FIELDS")
              for key, value in zip(tables[table].keys, tables[table].values)
              if value.elts[1].value in ("text", "number")}
    assert set(combos) == set(accepted), "a combo-box field without its accepted values in this test"
    items = {w.get("name"): [i.findtext("property/string") for i in w.findall("item")]
             for w in ET.parse(UI).iter("widget") if w.get("class") == "QComboBox"}
    for field, widget in combos.items():
        assert items[widget] == [str(v) for v in accepted[field]], f"{widget} offers {items[widget]}"


S4EXT_FIELDS = ["scm", "scmurl", "scmrevision", "depends", "build_subdirectory", "homepage", "contributors",
                "category", "iconurl", "status", "description", "screenshoturls", "enabled"]


def test_extension_description_has_what_the_index_needs():
    fields = {}
    for line in (REPO / "DTCSegmentation.s4ext").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    for key in S4EXT_FIELDS:
        assert fields.get(key), f".s4ext lacks {key}"
    assert fields["depends"] == "PyTorch" and fields["category"] == "Segmentation"
    # the index's form "Name (Organization), ...", the same in the .s4ext, CMake and the module's credits
    contributors = fields["contributors"]
    assert re.fullmatch(r"[^,()]+ \([^()]+\)(, [^,()]+ \([^()]+\))*", contributors), contributors
    module = (MODULE_DIR / "DTCSegmentation.py").read_text()
    assert f'set(EXTENSION_CONTRIBUTORS "{contributors}")' in (REPO / "CMakeLists.txt").read_text()
    assert f"self.parent.contributors = {contributors.split(', ')!r}".replace("'", '"') in module
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"project\(DTCSegmentation\)", cmake)
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in cmake
    for var in ("HOMEPAGE", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert re.search(rf'set\(EXTENSION_{var} "[^"]+"\)', cmake), var
    assert "add_subdirectory(DTCSegmentation)" in cmake and "Slicer_EXTENSION_CPACK" in cmake
    # the URLs point at files of this repository
    for url in (fields["iconurl"], *fields["screenshoturls"].split()):
        assert (REPO / url.split("/main/", 1)[1]).is_file(), url
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


# The catalog entry's schema (ExtensionsIndex, v1.0.1): required keys, and every key it allows
CATALOG_REQUIRED = {"$schema", "category", "scm_url"}
CATALOG_ALLOWED = CATALOG_REQUIRED | {"scm_revision", "scm_type", "build_dependencies", "build_subdirectory",
                                     "enabled", "tier"}


def test_catalog_entry_fits_its_schema_and_agrees_with_the_description():
    # ExtensionsIndex's current format (DTCSegmentation.json) beside the .s4ext that older Slicers read
    entry = json.loads((REPO / "DTCSegmentation.json").read_text())
    assert CATALOG_REQUIRED <= set(entry) <= CATALOG_ALLOWED, set(entry) ^ CATALOG_ALLOWED
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert isinstance(entry["build_dependencies"], list) and 1 <= entry["tier"] <= 5
    s4ext = dict(line.partition(" ")[::2] for line in (REPO / "DTCSegmentation.s4ext").read_text().splitlines()
                 if line.strip() and not line.startswith("#"))
    assert entry["scm_url"] == s4ext["scmurl"].strip() and entry["scm_revision"] == s4ext["scmrevision"].strip()
    assert entry["build_dependencies"] == s4ext["depends"].split() and entry["category"] == s4ext["category"].strip()
    # the index's checks: the extension's name is the project's and does not start with "Slicer"; the
    # repository's does
    name = re.search(r"project\((\w+)\)", (REPO / "CMakeLists.txt").read_text()).group(1)
    assert (REPO / f"{name}.json").is_file() and (REPO / f"{name}.s4ext").is_file()
    assert not name.startswith("Slicer") and entry["scm_url"].rsplit("/", 1)[1].startswith("Slicer")


def test_icon_is_128_pixels():
    from PIL import Image

    for path in (REPO / "Resources" / "Icons" / "DTCSegmentation.png", MODULE_DIR / "Resources" / "Icons" / "DTCSegmentation.png"):
        assert Image.open(path).size == (128, 128)


def test_every_batch_script_option_is_documented():
    spec = importlib.util.spec_from_file_location("batch", MODULE_DIR / "Scripts" / "batch.py")
    batch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(batch)
    commands = next(a for a in batch._parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    docs = (REPO / "docs" / "slicer.md").read_text(encoding="utf-8")
    missing = [f"batch.py {name} {option}" for name, parser in commands.items()
               for action in parser._actions for option in action.option_strings
               if option.startswith("--") and option != "--help"
               and not re.search(rf"(?<![\w-]){option}(?![\w-])", docs)]
    assert missing == [], "options docs/slicer.md does not name"


def test_only_the_panel_files_import_qt():
    # the logic must run under slicer-core, which has no Qt; a Qt file missing from PANEL_FILES would also
    # escape the checks above (a panel part may get by without importing Qt itself)
    def importsQt(path):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module.split(".")[0])
        return bool(names & {"qt", "ctk"})

    files = sorted((MODULE_DIR / "DTCSegmentationLib").glob("*.py"))
    qtFiles = [path for path in files if importsQt(path)]
    assert qtFiles and set(qtFiles) <= set(PANEL_FILES), sorted(set(qtFiles) - set(PANEL_FILES))


def test_logic_imports_no_qt_and_no_torch_at_import_time():
    code = ("import sys; sys.path.insert(0, %r); import DTCSegmentationLib.InferenceLogic, DTCSegmentationLib.TrainingLogic, "
            "DTCSegmentationLib.Dependencies, DTCSegmentationLib.ProgressPlot; "
            "bad = [m for m in ('qt', 'ctk', 'PySide6', 'PyQt5', 'torch', 'monai') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)") % str(MODULE_DIR)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_panel_renders_offscreen(tmp_path):
    pytest.importorskip("PySide6")
    run = subprocess.run([sys.executable, str(REPO / "Testing" / "Python" / "render_panel.py"), "-o", str(tmp_path / "p.png")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    import numpy as np
    from PIL import Image

    picture = np.asarray(Image.open(tmp_path / "p.png").convert("L"))
    height, width = picture.shape
    assert width >= 400 and height >= 1000
    # drawn, not blank: text and frames make many grey levels, in every quarter of the panel's height
    for quarter in np.array_split(picture, 4):
        assert len(np.unique(quarter)) > 20 and quarter.std() > 5
