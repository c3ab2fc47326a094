"""Scans as clinicians have them: acquired sagittally or coronally, or stored with permuted or flipped axes,
reach the network in the orientation it was trained in, and the label comes back on the scan's own grid."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import LA_ROOT, run_dtc
from dtc_training import la
from dtc_training.data import load_files
from dtc_training.infer import Model, segment
from dtc_training.metrics import dice
from dtc_training.model import DualTaskVNet
from dtc_training.model_io import save_model
from dtc_training.volumes import from_array, orientation, reorient, to_array

# A sagittal, a coronal and an axial scan stored with flipped and permuted axes (ITK's DICOM letters).
ORIENTATIONS = ["PIR", "RIP", "ASL"]


def scan(size=(40, 36, 24), spacing=(1.0, 1.0, 1.0)) -> sitk.Image:
    """An axial ("LPS") volume with structure along every axis, so that any swap or flip changes it."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in size), indexing="ij")
    array = np.exp(-((x - 0.3) ** 2 + (y + 0.2) ** 2 * 2 + (z - 0.1) ** 2 * 3) * 4) + 0.3 * x - 0.2 * z
    image = sitk.GetImageFromArray(array.transpose(2, 1, 0).astype(np.float32))
    image.SetSpacing(spacing), image.SetOrigin((-20.0, 11.0, 3.5))
    return image


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory):
    """A randomly initialised network: its output depends on how the axes reach it, which is what is tested."""
    torch.manual_seed(0)
    meta = {"n_filters": 4, "in_channels": 1, "patch_size": [32, 32, 16], "spacing": [1.0, 1.0, 1.0],
            "normalization": "zscore", "k": 1500.0, "label_name": "Left atrium"}
    return save_model(tmp_path_factory.mktemp("model") / "model.pt", DualTaskVNet(n_filters=4).eval(), meta)


@pytest.mark.parametrize("code", ORIENTATIONS)
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.3, 0.9, 1.6)], ids=["model-grid", "resampled"])
def test_a_reoriented_scan_gets_the_same_segmentation_on_its_own_grid(untrained_model, code, spacing):
    image = scan(spacing=spacing)
    stored = sitk.DICOMOrient(image, code)  # the same voxels in the same space, axes permuted and flipped
    assert orientation(stored) == code and stored.GetSize() != image.GetSize() or code == "ASL"
    original = segment(image, untrained_model, precision="fp32", probability=True)
    other = segment(stored, untrained_model, precision="fp32", probability=True)
    assert other.label.GetSize() == stored.GetSize() and other.label.GetDirection() == stored.GetDirection()
    assert other.info["reoriented"] and not original.info["reoriented"]
    back = sitk.GetArrayFromImage(sitk.DICOMOrient(other.probability, "LPS"))
    np.testing.assert_allclose(back, sitk.GetArrayFromImage(original.probability), atol=1e-5)
    # and the network really does see orientation: unreoriented, the same voxels give other probabilities
    naive = sitk.GetImageFromArray(sitk.GetArrayFromImage(stored))
    naive.SetSpacing(stored.GetSpacing())
    unturned = segment(naive, untrained_model, precision="fp32", probability=True)
    assert np.abs(sitk.GetArrayFromImage(unturned.probability) - sitk.GetArrayFromImage(other.probability)).max() > 1e-3


def test_training_reads_every_scan_in_the_training_orientation(tmp_path):
    image = scan()
    label = sitk.Cast(image > 0.5, sitk.sitkUInt8)
    for name, code in [("axial", "LPS"), ("sagittal", "PIR")]:
        sitk.WriteImage(sitk.DICOMOrient(image, code), str(tmp_path / f"{name}.nrrd"))
        sitk.WriteImage(sitk.DICOMOrient(label, code), str(tmp_path / f"{name}-label.nrrd"))
    entries = {"labeled": [{"image": str(tmp_path / f"{n}.nrrd"), "label": str(tmp_path / f"{n}-label.nrrd")}
                           for n in ("axial", "sagittal")], "unlabeled": [], "validation": []}
    axial, sagittal = load_files(entries, None, None, "test").labeled
    np.testing.assert_array_equal(axial["image"], sagittal["image"])
    np.testing.assert_array_equal(axial["label"], sagittal["label"])


def test_reorient_is_the_image_itself_when_already_in_the_orientation():
    image = scan()
    assert reorient(image) is image


def test_a_trained_model_records_its_orientation(trained_run):
    folder, _ = trained_run
    model = next(p for p in folder.iterdir() if p.stem == "model")
    assert json.loads(run_dtc("info", "--json", model).stdout)["orientation"] == "LPS"


BUILTIN = Path(__file__).resolve().parents[2] / "Resources" / "Models" / "la-builtin.safetensors"


@pytest.mark.skipif(not (LA_ROOT / "train.list").is_file(), reason=f"no LA data at {LA_ROOT}")
@pytest.mark.parametrize("code", ["PIR", "RAI"])
def test_development_cases_stored_otherwise_score_as_the_originals(code):
    """Two held-out development cases, stored sagittally and flipped, segmented by the built-in model."""
    model = Model.load(BUILTIN, "cpu")
    for case in ["LJSDNMND9SHKM7Q4IRHJ", "MFTDVMBWFNQ3F5KHBRDR"]:
        image, truth = (from_array(a.astype(np.float32), _la_grid(a.shape)) for a in la.read_case(LA_ROOT, case))
        original = to_array(segment(image, model).label)
        stored = segment(sitk.DICOMOrient(image, code), model).label
        back = to_array(sitk.DICOMOrient(stored, "LPS"))
        truth = to_array(truth) > 0
        assert dice(original, truth) > 0.8  # the model segments the case at all
        assert abs(dice(back, truth) - dice(original, truth)) < 0.005


def _la_grid(shape):
    grid = sitk.Image([int(s) for s in shape], sitk.sitkUInt8)
    grid.SetSpacing(la.SPACING)
    return grid
