"""The Models section driven as a user would (the panel's real code and .ui, real MRML, a real model store,
real `dtc` children, a local HTTP server with real sockets; Slicer's Qt GUI as qt_stand_in.py): the
built-in model chosen on a first start, its provenance shown, and it kept from deletion and renaming; a
catalog model downloaded with progress, cancelled, resumed and added to the store; a failed download;
and the Slicer process never importing torch on the way from entering the module to a segmentation."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MODULE_DIR, REPO, addVolume, phantom
from test_panel import gui, wait  # noqa: F401  (the panel fixture and its event loop)

sys.path.insert(0, str(REPO / "DTCTraining" / "tests"))
from file_server import FileServer, Served, git_blob_sha1, official_checkpoint  # noqa: E402

PROVENANCE = {"training_data": "2018 Atrial Segmentation Challenge, 80 LGE-MRI, University of Utah",
              "development_split": {"dice": 0.9}, "intended_use": "research, not clinical diagnosis"}


@pytest.fixture
def builtinModel(tmp_path, tinyModel, monkeypatch):
    """A built-in model folder holding a small model with provenance, as make_builtin_model.py writes it."""
    from dtc_training.model_io import convert_model

    folder = tmp_path / "Resources" / "Models"
    folder.mkdir(parents=True)
    convert_model(tinyModel, folder / "la-builtin.safetensors", "fp16", {"provenance": PROVENANCE})
    monkeypatch.setenv("DTC_BUILTIN_MODELS", str(folder))
    return folder / "la-builtin.safetensors"


@pytest.fixture(scope="module")
def official() -> bytes:
    return official_checkpoint()


def test_a_first_start_chooses_the_built_in_model_and_keeps_it(gui, scene, builtinModel, tmp_path):
    addVolume(scene, phantom(1)[0], "scan")
    panel = gui.open()
    ui = panel.ui
    assert ui.modelComboBox.currentText == "la-builtin" and ui.segmentButton.enabled
    assert ui.modelsTable.item(0, 1).text().startswith("built-in")
    ui.modelsTable.setCurrentCell(0, 0)
    assert "training data: 2018 Atrial Segmentation Challenge" in ui.modelDetailsLabel.text
    assert "intended use: research, not clinical diagnosis" in ui.modelDetailsLabel.text
    gui.answers.text = "mine"
    ui.renameModelButton.click()
    ui.deleteModelButton.click()
    assert [e.split(":")[0] for e in gui.answers.errors] == ["Could not rename the model", "Could not delete the model"]
    assert "built-in model, which cannot be renamed" in gui.answers.errors[0] and builtinModel.is_file()
    gui.answers.saveFile = str(tmp_path / "exported.safetensors")
    ui.exportModelButton.click()
    assert (tmp_path / "exported.safetensors").read_bytes() == builtinModel.read_bytes()
    row = next(r for r in range(ui.catalogTable.rowCount) if ui.catalogTable.item(r, 0).text().startswith("Left atrium"))
    ui.catalogTable.setCurrentCell(row, 0)
    assert ui.catalogTable.item(row, 2).text() == "built in" and not ui.downloadModelButton.enabled


def test_a_catalog_model_downloads_with_progress_cancel_and_resume(gui, scene, tmp_path, official, monkeypatch):
    entry = {"id": "official-test", "title": "Official test weights", "description": "4 filters", "version": "v1",
             "format": "official-dtc-pth", "checksum": f"git-blob-sha1:{git_blob_sha1(official)}",
             "licence": "MIT (test)", "citation": "Luo et al. 2021", "intended_use": "tests"}
    with FileServer({"/dtc.pth": Served(official, seconds_per_chunk=0.3)}) as server:
        catalog = tmp_path / "catalog.json"
        catalog.write_text(json.dumps({"models": [{**entry, "url": server.url("/dtc.pth")},
                                                  {**entry, "id": "gone", "title": "Gone", "url": server.url("/gone.pth")}]}))
        monkeypatch.setenv("DTC_MODEL_CATALOG", str(catalog))
        panel = gui.open()
        ui = panel.ui
        assert ui.modelComboBox.count == 0 and ui.catalogTable.item(0, 2).text() == "not downloaded"
        ui.catalogTable.setCurrentCell(0, 0)
        ui.downloadModelButton.click()
        assert ui.downloadProgressBar.visible and ui.cancelDownloadButton.enabled and not ui.downloadModelButton.enabled
        wait(panel, lambda: panel.models.download.done > 0)
        assert "Official test weights: downloading" in ui.downloadStatusLabel.text and ui.downloadProgressBar.value < 100
        ui.cancelDownloadButton.click()
        assert "cancelled" in ui.downloadStatusLabel.text and not ui.downloadProgressBar.visible
        partial = panel.logic.store.root / ".downloads" / "official-test.pth.part"
        kept = partial.stat().st_size
        assert 0 < kept < len(official) and panel.logic.store.list() == []
        server.routes["/dtc.pth"] = Served(official)
        ui.downloadModelButton.click()
        wait(panel, lambda: not panel.models.downloading())
        assert server.requests[-1] == ("/dtc.pth", f"bytes={kept}-")  # resumed where it stopped
        assert ui.modelComboBox.currentText == "official-test" and gui.answers.errors == []
        assert "added to the model store as 'official-test'" in ui.downloadStatusLabel.text
        assert ui.catalogTable.item(0, 2).text() == "downloaded" and not ui.downloadModelButton.enabled
        assert "licence: MIT (test)" in ui.modelDetailsLabel.text
        ui.catalogTable.setCurrentCell(1, 0)
        ui.downloadModelButton.click()
        wait(panel, lambda: not panel.models.downloading())
    assert len(gui.answers.errors) == 1 and gui.answers.errors[0].startswith("Download failed: Gone: ")
    assert "HTTP 404" in gui.answers.errors[0] and [m.name for m in panel.logic.store.list()] == ["official-test"]


PANEL_SCRIPT = """
import json, sys, time, types
sys.path[:0] = {paths!r}
import pytest, slicer
from qt_stand_in import Answers, activate, install
slicer.mrmlScene = slicer.vtkMRMLScene()
answers, patch = Answers(), pytest.MonkeyPatch()
install(patch, answers, slicerHome={home!r})
from conftest import addVolume, phantom
from pathlib import Path
from DTCSegmentationLib.InferenceLogic import InferenceLogic
from DTCSegmentationLib.ModelStore import ModelStore
from DTCSegmentationLib.Parameters import loadState, saveState
from DTCSegmentationLib.TrainingLogic import TrainingLogic
from DTCSegmentationLib.Widget import DTCPanel

class PanelLogic:  # test_panel.py's, which that module's imports would bring torch with
    def __init__(self, root):
        self.store = ModelStore(root / "models")
        self.training, self.inference = TrainingLogic(workRoot=root / "work"), InferenceLogic(store=self.store)
        self.node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "DTCSegmentation")
    def state(self):
        return loadState(self.node)
    def saveState(self, state):
        saveState(self.node, state)
addVolume(slicer.mrmlScene, phantom(2)[0], "scan")
panel = DTCPanel({ui!r}, types.SimpleNamespace(addWidget=lambda w: None), PanelLogic(Path({root!r})))
panel.enter()                                                      # entering the module
for model in {imports!r}:                                          # importing models
    answers.openFile = model
    panel.ui.importModelButton.click()
ui = panel.ui
activate(ui.modelComboBox, ui.modelComboBox.findText("la-builtin"))  # choosing one
panel.ui.segmentButton.click()                                     # Segment
while panel.segmentJob is not None and not panel.segmentJob.finished:
    panel.onTimer(); time.sleep(0.2)
print(json.dumps({{"torch": "torch" in sys.modules, "state": panel.segmentJob.state, "errors": answers.errors,
                   "models": [m.name for m in panel.logic.store.list()]}}))
panel.cleanup()
"""


def test_the_slicer_process_never_imports_torch(tmp_path, builtinModel, tinyModel):
    import torch

    from dtc_training.model import DualTaskVNet

    legacy = tmp_path / "earlier.pt"  # a model file of an earlier version, converted on import
    torch.save({"format": "dtc-model", "metadata": json.dumps({
        "architecture": "DualTaskVNet", "format_version": 1, "n_filters": 4, "in_channels": 1,
        "patch_size": [16, 16, 16], "spacing": None, "k": 1500.0}), "state_dict": DualTaskVNet(n_filters=4).state_dict()},
        legacy)
    script = PANEL_SCRIPT.format(paths=[str(Path(__file__).parent), str(MODULE_DIR), str(REPO / "DTCTraining")],
                                 home=str(tmp_path / "no-slicer-home"), ui=str(MODULE_DIR / "Resources" / "UI" / "DTCSegmentation.ui"),
                                 root=str(tmp_path), imports=[str(tinyModel), str(legacy)])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else proc.stderr[-3000:]
    assert result == {"torch": False, "state": "done", "errors": [],
                      "models": ["la-builtin", "earlier", tinyModel.parent.name]}
