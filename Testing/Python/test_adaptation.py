"""Adapting a model to a site from the panel (issue 33): Segment with the doubt map shown over the scan and
its score in the status line, correct, Add to training set, fine-tune from the current model ("Start
from"), segment again with the new model; the unlabeled volumes ordered by doubt ("Correct these first").
Real MRML (slicer-core), real `dtc serve`, `dtc train --init` and `dtc rank` children, a real model store;
Slicer's Qt GUI is qt_stand_in.py's (see test_panel.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk
from conftest import addVolume, obliqueMatrix, phantom
from qt_stand_in import activate
from test_panel import gui, setTinyTraining, wait  # noqa: F401  (gui: the panel fixture)

from dtc_training.config import FINE_TUNING
from DTCSegmentationLib import Doubt, SceneIO
from DTCSegmentationLib.Adaptation import DoubtRanking, startModel, switchStart
from DTCSegmentationLib.InferenceLogic import InferenceLogic
from DTCSegmentationLib.ModelStore import ModelStore
from DTCSegmentationLib.Parameters import SegmentParameters, TrainingParameters
from DTCSegmentationLib.TrainingLogic import TrainingJob, TrainingLogic


def correct(scene, segmentation, segmentId, volume, array):
    """What a correction in the Segment Editor leaves: the segment's voxels replaced on the scan's grid."""
    labelmap = addVolume(scene, array.astype(np.uint8), "correction", labelmap=True)
    labelmap.CopyOrientation(volume)
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segmentId)
    assert SceneIO.segmentationsLogic(scene).ImportLabelmapToSegmentationNode(labelmap, segmentation, ids)
    scene.RemoveNode(labelmap)


def test_the_adaptation_loop_segment_doubt_correct_add_fine_tune_segment_again(gui, scene, brightModel):
    image, truth = phantom(0, size=(24, 24, 24))
    scan = addVolume(scene, image, "site scan")
    other = addVolume(scene, phantom(1, size=(24, 24, 24))[0], "other scan")
    view = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")  # a slice view, as Slicer's layout makes them
    panel = gui.open()
    ui = panel.ui
    panel.logic.store.importModel(brightModel, "site-model")
    panel.models.refresh(select="site-model")
    assert [ui.startFromComboBox.itemData(i) for i in range(ui.startFromComboBox.count)] == ["", "site-model"]
    assert ui.startFromComboBox.currentText == "A new network"

    # Segment, with the doubt shown
    ui.showDoubtCheckBox.checked = True
    assert panel.logic.state().segmenting.uncertainty  # kept in the parameter node
    ui.inputVolumeSelector.setCurrentNode(scan)
    ui.outputSegmentationSelector.setCurrentNode(None)
    ui.segmentButton.click()
    wait(panel, lambda: panel.segmentJob.finished)
    job = panel.segmentJob
    assert job.state == "done", job.message + "\n".join(job.log)
    doubt = job.doubtNode
    assert doubt.GetName() == "site scan doubt" and doubt.IsA("vtkMRMLScalarVolumeNode")
    assert SceneIO.sameGeometry(doubt, scan)
    values = slicer.util.arrayFromVolume(doubt)
    assert values.max() > 0 and values.min() >= 0 and values.max() <= 1
    assert isinstance(job.doubtScore, float) and job.doubtScore > 0
    assert f"Doubt {job.doubtScore:.3f} (higher: check this scan first)." in ui.segmentStatusLabel.text
    assert (view.GetBackgroundVolumeID(), view.GetForegroundVolumeID()) == (scan.GetID(), doubt.GetID())
    assert view.GetForegroundOpacity() == Doubt.OPACITY
    assert doubt.GetDisplayNode().GetColorNodeID() == "vtkMRMLColorTableNodeIron"

    # correct it, add it to the training set
    segmentation = job.segmentationNode
    assert not np.array_equal(SceneIO.segmentArray(segmentation, job.segmentId, scan), truth)  # a change to make
    correct(scene, segmentation, job.segmentId, scan, truth)
    ui.unlabeledSelector.setCheckState(other, 2)
    ui.addToTrainingButton.click()
    assert [(p.volume, p.label) for p in panel.logic.state().pairs] == [(scan, segmentation)]

    # fine-tune the current model: Start from it
    activate(ui.startFromComboBox, ui.startFromComboBox.findData("site-model"))
    assert (ui.iterationsSpinBox.value, ui.learningRateSpinBox.value) == (FINE_TUNING["iterations"], FINE_TUNING["lr"])
    setTinyTraining(ui, iterations=2)
    ui.labeledBatchSpinBox.value = ui.unlabeledBatchSpinBox.value = 1
    ui.modelNameLineEdit.text = "site-model-2"
    assert panel.logic.state().training.startFrom == "site-model"
    assert ui.trainButton.enabled, ui.trainButton.toolTip
    ui.trainButton.click()
    wait(panel, lambda: panel.training.job.finished)
    run = panel.training.job
    assert run.state == "done", run.message + run.logTail()
    config = json.loads((run.outDir / "train_config.json").read_text())["config"]
    stored = panel.logic.store.get("site-model")
    assert config["init"]["path"] == str(stored.path) and config["n_filters"] == 4  # the model's, not the panel's
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(next((run.outDir / "data" / "labels").glob("*.nrrd")))))
    assert np.array_equal(label, truth)  # the correction is what it trained on
    assert "Added to the model store as 'site-model-2'" in ui.trainingStatusLabel.text
    assert ui.modelComboBox.currentText == "site-model-2" and ui.startFromComboBox.findData("site-model-2") > 0
    assert ui.startFromComboBox.currentData == "site-model"  # the choice stays through the store's refresh

    # segment again with the new model: the same segmentation and doubt nodes are updated
    ui.outputSegmentationSelector.setCurrentNode(segmentation)
    ui.segmentButton.click()
    wait(panel, lambda: panel.segmentJob.finished)
    again = panel.segmentJob
    assert again.state == "done", again.message + "\n".join(again.log)
    assert again.modelPath == panel.logic.store.get("site-model-2").path
    assert again.segmentationNode is segmentation and again.doubtNode is doubt
    assert len(slicer.util.getNodes("site scan doubt*")) == 1 and again.doubtScore is not None
    assert gui.answers.errors == []


def test_start_from_is_kept_in_the_scene_and_a_model_gone_from_the_store_is_said_before_training(
        gui, scene, tinyModel, tmp_path, monkeypatch):
    builtin = tmp_path / "builtin"
    builtin.mkdir()
    (builtin / "la-builtin.safetensors").write_bytes(tinyModel.read_bytes())
    monkeypatch.setenv("DTC_BUILTIN_MODELS", str(builtin))
    image, label = phantom(0, size=(24, 24, 24))
    scan, labelmap = addVolume(scene, image, "case"), addVolume(scene, label, "case-label", labelmap=True)
    addVolume(scene, phantom(1, size=(24, 24, 24))[0], "unlabeled")
    panel = gui.open()
    ui = panel.ui
    panel.logic.store.importModel(tinyModel, "to-go")
    panel.models.refresh()
    combo = ui.startFromComboBox
    assert [(combo.itemText(i), combo.itemData(i)) for i in range(combo.count)] == [
        ("A new network", ""), ("la-builtin (built-in)", "la-builtin"), ("to-go", "to-go")]
    ui.addPairButton.click()
    panel.pairsTable.rows[-1][0].setCurrentNode(scan)
    panel.pairsTable.rows[-1][1].setCurrentNode(labelmap)
    ui.iterationsSpinBox.value = 300  # typed by the user: a start chosen later keeps it
    activate(ui.startFromComboBox, ui.startFromComboBox.findData("to-go"))
    assert (ui.iterationsSpinBox.value, ui.learningRateSpinBox.value) == (300, FINE_TUNING["lr"])
    assert not ui.nFiltersSpinBox.enabled and not ui.patchXSpinBox.enabled  # the model's own
    activate(ui.startFromComboBox, 0)  # back to a new network: the scratch learning rate again
    assert (ui.iterationsSpinBox.value, ui.learningRateSpinBox.value) == (300, 0.01)
    assert ui.nFiltersSpinBox.enabled and ui.kSpinBox.enabled
    activate(ui.startFromComboBox, ui.startFromComboBox.findData("to-go"))
    assert gui.open().ui.startFromComboBox.currentData == "to-go"  # a second panel reads the parameter node

    panel.logic.store.delete("to-go")
    panel.models.refresh()
    assert ui.startFromComboBox.currentText == "to-go (no longer in the model store)"
    assert ui.trainButton.enabled, ui.trainButton.toolTip
    ui.trainButton.click()
    assert panel.training.job is None and len(gui.answers.errors) == 1
    assert gui.answers.errors[0].startswith("Cannot start training: Start from: the model 'to-go' is no longer in "
                                            "the model store")
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())  # nothing exported, no child


def test_the_train_command_fine_tunes_the_chosen_model_and_a_resume_never_reads_it_again(tinyModel, tmp_path):
    store = ModelStore(tmp_path / "store")
    path = store.importModel(tinyModel, "la").path
    assert startModel(store, "la") == path and startModel(store, str(tinyModel)) == tinyModel.resolve()
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot be fine-tuned"):
        startModel(store, str(tmp_path / "junk.safetensors"))
    params = switchStart(TrainingParameters(nFilters=8, spacing=(1.5, 1.5, 1.5)), "la")
    assert (params.iterations, params.learningRate) == (FINE_TUNING["iterations"], FINE_TUNING["lr"])
    logic = TrainingLogic(workRoot=tmp_path, store=store)
    job = TrainingJob(tmp_path / "run", tmp_path / "run" / "datalist.json", params, initModel=path)
    command = logic.command(job, resume=False)
    assert command[command.index("--init") + 1] == str(path)
    assert not {"--n-filters", "--k", "--patch", "--spacing"} & set(command)  # the model's own
    assert "--init" not in logic.command(job, resume=True)
    scratch = TrainingParameters(nFilters=8, spacing=(1.5, 1.5, 1.5)).arguments()
    assert scratch[scratch.index("--n-filters") + 1] == "8" and scratch[scratch.index("--spacing") + 1] == "1.5"
    assert "--patch" in scratch


def test_segment_with_uncertainty_loads_the_backends_doubt_map_on_the_scans_grid(scene, brightModel, tmp_path):
    from dtc_training.infer import segment

    image, _ = phantom(5, size=(24, 20, 18))
    scan = addVolume(scene, image, "patient", obliqueMatrix())
    view = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    logic = InferenceLogic(store=ModelStore(tmp_path / "store"))
    params = SegmentParameters(device="cpu", largestComponent=False, uncertainty=True)
    job = logic.segment(scan, str(brightModel), params=params, timeout=120)
    written = SceneIO.writeVolume(scan, tmp_path / "scan.nrrd")
    backend = segment(sitk.ReadImage(str(written)), str(brightModel), uncertainty=True)
    assert SceneIO.sameGeometry(job.doubtNode, scan)
    assert np.allclose(slicer.util.arrayFromVolume(job.doubtNode), sitk.GetArrayFromImage(backend.doubt), atol=1e-6)
    assert job.doubtScore == pytest.approx(backend.doubt_score, abs=1e-6)
    assert not job.workDir.exists()  # the doubt file was temporary: the node keeps no storage pointing at it
    assert job.doubtNode.GetStorageNode() is None
    Doubt.showDoubt(scan, job.doubtNode)
    assert view.GetForegroundVolumeID() == job.doubtNode.GetID()
    plain = logic.segment(scan, str(brightModel), params=SegmentParameters(device="cpu"), timeout=120)
    assert plain.doubtNode is None and plain.doubtScore is None
    Doubt.showDoubt(scan, None)  # a result without doubt: the earlier overlay goes
    assert view.GetForegroundVolumeID() is None and view.GetBackgroundVolumeID() == scan.GetID()
    logic.shutdown()


def test_correct_these_first_orders_the_unlabeled_volumes_by_doubt_in_the_background(gui, scene, brightModel):
    volumes = [addVolume(scene, phantom(i, size=(24, 24, 24))[0], f"scan{i}") for i in range(3)]
    panel = gui.open()
    ui = panel.ui
    assert not ui.rankButton.enabled and "no model" in ui.rankButton.toolTip
    panel.logic.store.importModel(brightModel, "la")
    panel.models.refresh()
    for volume in volumes:
        ui.unlabeledSelector.setCheckState(volume, 2)
    assert ui.rankButton.enabled, ui.rankButton.toolTip
    ui.rankButton.click()
    ranking = panel.adaptation.ranking
    assert not ranking.finished and panel.timer.active and not ui.rankButton.enabled  # the panel goes on
    wait(panel, lambda: ranking.finished)
    assert ranking.state == "done", ranking.message + "\n".join(ranking.log)
    assert ui.rankTable.rowCount == 3 and {ui.rankTable.item(r, 0).text() for r in range(3)} == {"scan0", "scan1", "scan2"}
    scores = [ranking.ranking[r][1] for r in range(3)]
    shown = [ui.rankTable.item(r, 1).text() for r in range(3)]
    assert shown == ["none" if s is None else f"{s:.3f}" for s in scores]
    known = [s for s in scores if s is not None]
    assert known == sorted(known, reverse=True) and scores[:len(scores) - len(known)] == [None] * (3 - len(known))
    ui.rankTable.setCurrentCell(2, 0)  # the user picks one: it becomes the Segment section's input
    assert ui.inputVolumeSelector.currentNode() is ranking.ranking[2][0]
    assert ui.rankButton.enabled and gui.answers.errors == []


def test_a_ranking_of_a_model_that_is_no_dtc_model_fails_in_words(scene, tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    volume = addVolume(scene, phantom(0, size=(16, 16, 16))[0], "scan")
    ranking = DoubtRanking([volume], tmp_path / "junk.safetensors").wait(120)
    assert ranking.state == "failed" and ranking.message.startswith("Could not order the volumes by doubt")
    assert "junk.safetensors" in ranking.message and not ranking.folder.exists()
