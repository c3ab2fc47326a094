"""Segmenting from the scene with the real backend (`dtc infer` in a child), and the batch script."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
from conftest import MODULE_DIR, REPO, addVolume, obliqueMatrix, phantom

from DTCSegmentationLib import SceneIO
from DTCSegmentationLib.InferenceLogic import InferenceLogic, addToTrainingSet
from DTCSegmentationLib.ModelStore import ModelStore, ModelStoreError
from DTCSegmentationLib.Parameters import ModuleState, SegmentParameters

PARAMS = SegmentParameters(device="cpu", largestComponent=False)


def expected(volume, model, tmp_path, largest=False, orientations=1, precision="auto"):
    """What the backend's Python API gives for the same volume, written the way the logic writes it."""
    from dtc_training.infer import segment

    path = SceneIO.writeVolume(volume, tmp_path / "expected-input.nrrd")
    label = segment(sitk.ReadImage(str(path)), str(model), largest_component=largest, orientations=orientations,
                    precision=precision).label
    return sitk.GetArrayFromImage(label)


def test_segment_creates_the_named_segment_on_the_input_geometry_and_reruns_update_it(scene, tinyModel, tmp_path):
    image, _ = phantom(5, size=(24, 20, 18))
    volume = addVolume(scene, image, "patient", obliqueMatrix())
    logic = InferenceLogic(store=ModelStore(tmp_path / "store"))
    job = logic.segment(volume, str(tinyModel), params=PARAMS, timeout=120)
    seg = job.segmentationNode
    assert job.state == "done" and seg.GetName() == "patient segmentation"
    segment = seg.GetSegmentation().GetSegment(job.segmentId)
    assert segment.GetName() == "Left atrium" and "82471001" in segment.GetTerminology()
    assert SceneIO.segmentationMatchesVolume(seg, volume)
    result = SceneIO.segmentArray(seg, job.segmentId, volume)
    assert result.shape == image.shape
    assert np.array_equal(result, expected(volume, tinyModel, tmp_path))
    assert not job.workDir.exists(), "temporary files removed"

    # a corrected result goes into the training set (human in the loop)
    state = ModuleState(unlabeled=[volume])
    addToTrainingSet(state, volume, seg)
    assert [(p.volume, p.label, p.segment) for p in state.pairs] == [(volume, seg, job.segmentId)]
    assert state.unlabeled == []

    nodes = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    again = logic.segment(volume, str(tinyModel), segmentationNode=seg, params=PARAMS, timeout=120)
    assert again.segmentId == job.segmentId and seg.GetSegmentation().GetNumberOfSegments() == 1
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == nodes


def test_test_time_orientations_reach_the_backend(scene, tinyModel, tmp_path):
    assert SegmentParameters(orientations=4).arguments()[-3:] == ["--tta", "4", "--largest-component"]
    assert SegmentParameters(orientations=3).problems() == ["test-time orientations 3 is not one of 1, 2, 4, 8"]
    assert SegmentParameters().arguments()[:4] == ["--mode", "fast", "--window-size", "patch"]
    assert "--window-size" not in SegmentParameters(mode="official").arguments()
    assert SegmentParameters(windowSize="huge").problems() == ["window size 'huge' is not patch or volume"]
    image, _ = phantom(5, size=(24, 20, 18))
    volume = addVolume(scene, image, "patient", obliqueMatrix())
    params = SegmentParameters(device="cpu", largestComponent=False, orientations=4)
    job = InferenceLogic(store=ModelStore(tmp_path / "store")).segment(volume, str(tinyModel), params=params, timeout=120)
    result = SceneIO.segmentArray(job.segmentationNode, job.segmentId, volume)
    averaged = expected(volume, tinyModel, tmp_path, orientations=4)
    assert not np.array_equal(averaged, expected(volume, tinyModel, tmp_path))  # so the check below can fail
    assert np.array_equal(result, averaged)


def test_precision_reaches_the_backend(scene, tinyModel, tmp_path):
    assert SegmentParameters(precision="int8").arguments()[:6] == ["--mode", "fast", "--window-size", "patch",
                                                                   "--precision", "int8"]
    assert SegmentParameters(precision="fp32").arguments()[4:6] == ["--precision", "fp32"]
    assert "--precision" not in SegmentParameters().arguments()  # auto: the backend picks per device
    assert SegmentParameters(precision="int8", mode="official").problems() == [
        "int8 runs in fast mode only (official mode is the fp32 reference)"]
    assert SegmentParameters(precision="int8", device="cuda").problems() == [
        "int8 runs on the CPU only: choose device cpu or auto"]
    assert SegmentParameters(precision="fp16", device="cpu").problems() == [
        "fp16 runs on CUDA only: choose device cuda or auto"]
    assert SegmentParameters(precision="int4").problems() == [
        "precision 'int4' is not one of auto, fp32, fp16, int8"]
    image, _ = phantom(5, size=(24, 20, 18))
    volume = addVolume(scene, image, "patient", obliqueMatrix())
    params = SegmentParameters(precision="int8", largestComponent=False)  # device auto: the CPU for int8
    logic = InferenceLogic(store=ModelStore(tmp_path / "store"))
    job = logic.segment(volume, str(tinyModel), params=params, timeout=120)
    result = SceneIO.segmentArray(job.segmentationNode, job.segmentId, volume)
    assert result.any()
    assert np.array_equal(result, expected(volume, tinyModel, tmp_path, precision="int8"))


def test_a_volume_under_a_transform_gets_its_segmentation_under_the_same_transform(scene, tinyModel, tmp_path):
    import vtk

    image, _ = phantom(5, size=(24, 20, 18))
    volume = addVolume(scene, image, "patient", obliqueMatrix())
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 25.0)
    transform.SetMatrixTransformToParent(shift)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    logic = InferenceLogic(store=ModelStore(tmp_path / "store"))
    job = logic.segment(volume, str(tinyModel), params=PARAMS, timeout=120)
    assert job.state == "done" and job.segmentationNode.GetTransformNodeID() == transform.GetID()
    result = SceneIO.segmentArray(job.segmentationNode, job.segmentId, volume)
    assert np.array_equal(result, expected(volume, tinyModel, tmp_path)) and result.any()
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    with pytest.raises(ValueError, match="under a transform"):
        logic.start(volume, str(tinyModel), roi=roi, params=PARAMS)


def test_segment_inside_roi_only(scene, brightModel, tmp_path):
    import vtk

    image, _ = phantom(6, size=(24, 24, 24))
    volume = addVolume(scene, image, "patient", obliqueMatrix(angle=0.0))
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m)
    roi.SetCenter(*m.MultiplyPoint((8.0, 8.0, 8.0, 1.0))[:3])
    roi.SetSize(10, 10, 10)
    params = SegmentParameters(device="cpu", largestComponent=False)
    job = InferenceLogic(store=ModelStore(tmp_path)).segment(volume, str(brightModel), roi=roi, params=params, timeout=120)
    result = SceneIO.segmentArray(job.segmentationNode, job.segmentId, volume)
    # The 10 mm ROI around voxel (8, 8, 8) at spacings (0.7, 0.9, 1.6) mm spans i 0.9-15.1, j 2.4-13.6 and
    # k 4.9-11.1, so the crop (whole voxels around it) is k 4-12, j 2-14, i 0-16 in the (k, j, i) array.
    inside = np.zeros(image.shape, bool)
    inside[4:13, 2:15, 0:17] = True
    assert result.shape == image.shape and result[inside].any() and not result[~inside].any()
    roi.SetCenter(*m.MultiplyPoint((200.0, 8.0, 8.0, 1.0))[:3])  # far outside the volume
    segmentations = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    with pytest.raises(ValueError, match="does not overlap"):
        InferenceLogic(store=ModelStore(tmp_path)).start(volume, str(brightModel), roi=roi, params=params)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == segmentations  # nothing left behind


def test_a_model_of_another_kind_is_refused(scene, tmp_path):
    import torch

    other = tmp_path / "unet.pt"
    torch.save({"format": "something-else"}, other)
    image, _ = phantom(0, size=(16, 16, 16))
    volume = addVolume(scene, image, "v")
    with pytest.raises(ValueError, match="not a DTC model"):
        InferenceLogic(store=ModelStore(tmp_path)).start(volume, str(other))
    with pytest.raises(ValueError, match="no model named"):
        InferenceLogic(store=ModelStore(tmp_path)).start(volume, "missing-model")
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def _batch(*args, env=None, cwd=REPO):
    return subprocess.run([sys.executable, str(MODULE_DIR / "Scripts" / "batch.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, **(env or {})})


def test_batch_script_segments_every_input_into_seg_nrrd(scene, tinyModel, tmp_path):
    inputs = []
    for i in range(2):
        image, _ = phantom(i, size=(20, 20, 20))
        # dots in the names: scan.v0 and scan.v1 must not both become "scan"
        inputs.append(SceneIO.writeVolume(addVolume(scene, image, f"in{i}", obliqueMatrix()), tmp_path / f"scan.v{i}.nrrd"))
    run = _batch("--", "segment", "--model", tinyModel, "--device", "cpu", "--tta", "2", "--precision", "fp32",
                 "-o", tmp_path / "out", *inputs)
    assert run.returncode == 0, run.stderr
    for path in inputs:
        out = tmp_path / "out" / f"{path.name[:-5]}.seg.nrrd"
        seg = SceneIO.readSegmentation(out)
        volume = SceneIO.readVolume(path)
        segmentId = seg.GetSegmentation().GetSegmentIdBySegmentName("Left atrium")
        assert segmentId
        result = SceneIO.segmentArray(seg, segmentId, volume)
        # the batch default keeps the largest component; --tta 2 and --precision fp32 must reach the backend
        assert np.array_equal(result, expected(volume, tinyModel, tmp_path, largest=True, orientations=2,
                                                precision="fp32"))

    failed = _batch("segment", "--model", tinyModel, "-o", tmp_path / "out", tmp_path / "missing.nrrd")
    assert failed.returncode == 2 and "missing.nrrd" in failed.stderr
    refused = _batch("segment", "--model", inputs[0], "-o", tmp_path / "out", *inputs)
    assert refused.returncode == 2 and refused.stderr.count("not a DTC model") == 1  # said once, before any input
    (tmp_path / "other").mkdir()
    same = SceneIO.writeVolume(SceneIO.readVolume(inputs[0]), tmp_path / "other" / "scan.v0.nii.gz")
    clash = _batch("segment", "--model", tinyModel, "-o", tmp_path / "out2", inputs[0], same)
    assert clash.returncode == 2 and "scan.v0.seg.nrrd" in clash.stderr and not (tmp_path / "out2").exists()


def _trainingFiles(scene, folder) -> list[tuple]:
    """Three oblique phantom volumes with their labelmaps, written as NRRD: (volume, label) paths."""
    files = []
    for i in range(3):
        image, label = phantom(i)
        v = SceneIO.writeVolume(addVolume(scene, image, f"v{i}", obliqueMatrix()), folder / f"v{i}.nrrd")
        l = SceneIO.writeVolume(addVolume(scene, label, f"l{i}", obliqueMatrix(), labelmap=True), folder / f"l{i}.nrrd")
        files.append((v, l))
    return files


def test_batch_script_trains_and_stores_a_model(scene, tmp_path):
    files = _trainingFiles(scene, tmp_path)
    run = _batch("train", "--labeled", *[f"{v}:{l}" for v, l in files[:2]], "--unlabeled", files[2][0],
                 "-o", "run", "--iterations", 2, "--patch", 16, 16, 16, "--n-filters", 4,  # -o relative to cwd
                 "--labeled-batch", 1, "--unlabeled-batch", 1, "--device", "cpu", "--val-fraction", 0.5,
                 "--val-every", 1, "--recipe", "paper", "--store-name", "batch-model",
                 env={"DTC_MODEL_STORE": str(tmp_path / "store")}, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert [m.name for m in ModelStore(tmp_path / "store").list()] == ["batch-model"]
    # Resuming keeps the run's own parameters; only the options given change.
    resumed = _batch("train", "--resume", "-o", "run", "--iterations", 3, "--precision", "bf16", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    config = json.loads((tmp_path / "run" / "train_config.json").read_text())["config"]
    assert (config["iterations"], config["val_every"], config["device"], config["amp"]) == (3, 1, "cpu", "bf16")
    assert (config["lr_schedule"], config["intensity_augmentation"]) == ("step", False)  # the paper's recipe
    # the run folder remembers the resume's changes for the next --resume
    saved = json.loads((tmp_path / "run" / "parameters.json").read_text())
    assert (saved["iterations"], saved["precision"], saved["recipe"]) == (3, "bf16", "paper")
    bad = _batch("train", "--labeled", f"{files[0][0]}", "-o", tmp_path / "run2")
    assert bad.returncode == 2 and "IMAGE:LABEL" in bad.stderr
    # a new training into the run's folder (a forgotten --resume) is refused before its data is touched
    datalist = (tmp_path / "run" / "data" / "datalist.json").read_text()
    again = _batch("train", "--labeled", f"{files[0][0]}:{files[0][1]}", "-o", tmp_path / "run")
    assert again.returncode == 2 and "holds a training run already (checkpoint.pt, model.safetensors)" in again.stderr
    assert (tmp_path / "run" / "data" / "datalist.json").read_text() == datalist


def test_model_store_renames_and_exports_models_that_load_elsewhere(tinyModel, tmp_path):
    store = ModelStore(tmp_path / "store")
    store.importModel(tinyModel, "la")
    store.importModel(tinyModel, "other")
    renamed = store.rename("la", "la-dtc-v2")
    assert [m.name for m in store.list()] == ["la-dtc-v2", "other"]
    assert json.loads((renamed.folder / "metadata.json").read_text())["store"]["name"] == "la-dtc-v2"
    for bad, message in (("other", "already in"), ("../escape", "only letters"), ("", "only letters"),
                         (".hidden", "only letters")):
        with pytest.raises(ModelStoreError, match=message):
            store.rename("la-dtc-v2", bad)
    with pytest.raises(ModelStoreError, match="no model named 'gone'"):
        store.rename("gone", "x")
    assert [m.name for m in store.list()] == ["la-dtc-v2", "other"]  # refused renames changed nothing
    (tmp_path / "shared").mkdir()
    exported = store.export("la-dtc-v2", tmp_path / "shared")  # a folder: the file is named after the model
    assert exported == tmp_path / "shared" / "la-dtc-v2.safetensors"
    assert exported.read_bytes() == tinyModel.read_bytes()
    assert sorted(p.name for p in exported.parent.iterdir()) == ["la-dtc-v2.safetensors"]  # no temporary file left
    assert ModelStore(tmp_path / "colleague").importModel(exported).name == "la-dtc-v2"  # loads as it is
    with pytest.raises(OSError):
        store.export("other", tmp_path / "no-such-folder" / "m.safetensors")


def test_model_store_imports_whole_models_under_free_names_and_ignores_unfinished_ones(tinyModel, tmp_path, monkeypatch):
    store = ModelStore(tmp_path / "store")
    first, second = store.importModel(tinyModel, "la"), store.importModel(tinyModel, "la")
    assert (first.name, second.name) == ("la", "la-2") and second.metadata["store"]["name"] == "la-2"
    assert second.path.read_bytes() == tinyModel.read_bytes()
    # An import cut short (here: the disk fills while the metadata is written) leaves nothing behind.
    import pathlib

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.importModel(tinyModel, "la")
    monkeypatch.undo()
    assert sorted(p.name for p in store.root.iterdir()) == ["la", "la-2"]
    # A folder an import was killed in (just before its rename) is hidden: it is never listed.
    killed = store.root / ".import-killed"
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(tinyModel.read_bytes())
    (killed / "metadata.json").write_text(json.dumps(first.metadata))
    assert [m.name for m in store.list()] == ["la", "la-2"]
    # Another process takes the free name between the choice and the rename: the next name is used.
    names = iter(["la-2", "la-3"])
    monkeypatch.setattr(ModelStore, "uniqueName", lambda self, base: next(names))
    assert store.importModel(tinyModel, "la").name == "la-3"


def test_batch_training_past_its_timeout_stops_with_a_checkpoint_that_resume_continues(scene, tmp_path):
    files = _trainingFiles(scene, tmp_path)
    run = _batch("train", "--labeled", *[f"{v}:{l}" for v, l in files[:2]], "--unlabeled", files[2][0],
                 "-o", tmp_path / "run", "--iterations", 100000, "--patch", 16, 16, 16, "--n-filters", 4,
                 "--labeled-batch", 1, "--unlabeled-batch", 1, "--device", "cpu", "--val-fraction", 0, "--timeout", 1)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "did not finish within 1 s; Stopped at iteration" in run.stderr
    import torch

    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["iteration"]
    resumed = _batch("train", "--resume", "-o", tmp_path / "run", "--iterations", saved + 2)
    assert resumed.returncode == 0 and (tmp_path / "run" / "model.safetensors").is_file(), resumed.stdout + resumed.stderr
