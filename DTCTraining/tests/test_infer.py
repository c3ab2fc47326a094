"""`segment` and `dtc infer`: the label map keeps the input's geometry on oblique, anisotropic, odd-sized
volumes, in every file format, for numpy arrays and SimpleITK images.

The tests use a *threshold network*: a DualTaskVNet whose weights make seg = relu(z) - 0.5, so a voxel is
labelled exactly where its z-scored intensity exceeds 0.5, wherever it is. The expected label of every
voxel is then known from its physical position."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import run_dtc
from dtc_training.errors import InputError
from dtc_training.infer import Model, segment
from dtc_training.model import DualTaskVNet
from dtc_training.model_io import save_model

PATCH = [32, 32, 16]


def threshold_network(n_filters=4) -> DualTaskVNet:
    net = DualTaskVNet(n_filters=n_filters).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.weight.fill_(1.0)  # running stats 0/1: identity (up to eps)
        net.block_one.conv[0].weight[0, 0, 1, 1, 1] = 1.0  # channel 0 carries relu(z) to the last stage
        net.block_nine.conv[0].weight[0, 0, 1, 1, 1] = 1.0
        net.out_conv2.weight[0, 0] = 1.0
        net.out_conv2.bias.fill_(-0.5)
    return net


def threshold_model_file(path, spacing=(1.0, 1.0, 1.0)):
    meta = {"n_filters": 4, "in_channels": 1, "patch_size": PATCH, "spacing": list(spacing) if spacing else None,
            "normalization": "zscore", "k": 1500.0, "label_name": "ball"}
    return save_model(path, threshold_network(), meta)


OBLIQUE = (0.8660254, -0.5, 0.0, 0.5, 0.8660254, 0.0, 0.0, 0.0, 1.0)  # 30 degrees about z


def ball_image(size=(37, 29, 17), spacing=(0.9, 1.3, 2.1), origin=(-12.0, 7.5, 30.0), direction=OBLIQUE,
               centre_index=(15.0, 16.0, 7.0), radius_mm=8.0):
    """An off-centre bright ball (intensity 10 on 0), so that any axis swap or flip misplaces it."""
    image = sitk.Image(list(size), sitk.sitkFloat32)
    image.SetSpacing(spacing), image.SetOrigin(origin), image.SetDirection(direction)
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint(centre_index))
    distance = physical_distance(image, centre)
    image = sitk.GetImageFromArray((10.0 * (distance < radius_mm)).transpose(2, 1, 0).astype(np.float32))
    image.SetSpacing(spacing), image.SetOrigin(origin), image.SetDirection(direction)
    return image, centre, radius_mm


def physical_distance(image, centre):
    """(x, y, z) array of each voxel's distance (mm) to `centre`."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in image.GetSize()], indexing="ij"), -1).reshape(-1, 3)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    points = np.array(image.GetOrigin()) + (idx * np.array(image.GetSpacing())) @ direction.T
    return np.linalg.norm(points - centre, axis=1).reshape(image.GetSize())


def assert_same_grid(a: sitk.Image, b: sitk.Image):
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def assert_labels_the_ball(label: sitk.Image, centre, radius, band_mm):
    """Every voxel clearly inside the ball is 1 and every voxel clearly outside is 0."""
    array = sitk.GetArrayFromImage(label).transpose(2, 1, 0)
    distance = physical_distance(label, centre)
    assert array[distance < radius - band_mm].all()
    assert not array[distance > radius + band_mm].any()


@pytest.fixture
def model(tmp_path):
    return Model.load(threshold_model_file(tmp_path / "model.pt"), "cpu")


@pytest.mark.parametrize("mode", ["fast", "official"])
def test_oblique_anisotropic_odd_volume_round_trip(model, mode):
    image, centre, radius = ball_image()
    result = segment(image, model, mode=mode, probability=True)
    assert result.info["resampled"] and result.info["mode"] == mode
    assert result.label.GetPixelID() == sitk.sitkUInt8
    assert_same_grid(result.label, image)
    assert_same_grid(result.probability, image)
    # Resampling to the model's 1 mm grid and back blurs the boundary by about one input voxel.
    assert_labels_the_ball(result.label, centre, radius, band_mm=2.2)


def test_no_resampling_on_the_model_grid_gives_the_exact_threshold(tmp_path):
    model = Model.load(threshold_model_file(tmp_path / "native.pt", spacing=None), "cpu")
    image, _, _ = ball_image()
    result = segment(image, model)
    assert not result.info["resampled"]
    array = sitk.GetArrayFromImage(image)
    z = (array - array.mean()) / array.std()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.label), z > 0.5)


def test_numpy_arrays_in_numpy_arrays_out(model):
    image, _, _ = ball_image(spacing=(1.0, 1.0, 1.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    result = segment(array, model, probability=True)
    assert isinstance(result.label, np.ndarray) and result.label.shape == array.shape
    from_image = sitk.GetArrayFromImage(segment(image, model).label).transpose(2, 1, 0)
    np.testing.assert_array_equal(result.label, from_image)
    assert result.label.any() and result.probability.dtype == np.float32
    half = segment(array[::2], model, spacing=np.array([2.0, 1.0, 1.0]))  # numpy spacing; resampled to the model grid and back
    assert half.info["resampled"] and half.label.shape == array[::2].shape


def test_largest_component_removes_a_second_ball(model):
    image, centre, radius = ball_image(size=(60, 40, 24), spacing=(1.0, 1.0, 1.0))
    array = sitk.GetArrayFromImage(image)
    array[2:6, 2:6, 2:6] = 10.0  # a small separate blob
    second = sitk.GetImageFromArray(array)
    second.CopyInformation(image)
    assert sitk.GetArrayFromImage(segment(second, model).label)[2:6, 2:6, 2:6].all()
    kept = segment(second, model, largest_component=True)
    assert kept.info["largest_component"] and not sitk.GetArrayFromImage(kept.label)[2:6, 2:6, 2:6].any()
    assert_labels_the_ball(kept.label, centre, radius, band_mm=1.5)


def test_orientation_averaging_keeps_geometry_and_is_reported(tmp_path, model):
    # the threshold network acts voxel by voxel, so every orientation gives the same label
    image, centre, radius = ball_image()
    single = segment(image, model)
    averaged = segment(image, model, orientations=8)
    assert (single.info["orientations"], averaged.info["orientations"]) == (1, 8)
    assert_same_grid(averaged.label, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(averaged.label), sitk.GetArrayFromImage(single.label))
    with pytest.raises(InputError, match="orientations 3"):
        segment(image, model, orientations=3)
    source, report = tmp_path / "scan.nrrd", tmp_path / "report.json"
    sitk.WriteImage(image, str(source))
    proc = run_dtc("infer", "--model", tmp_path / "model.pt", source, "-o", tmp_path / "label.nrrd", "--tta", "4",
                   "--report", report)
    assert json.loads(report.read_text())["reports"][0]["orientations"] == 4 and "x 4 orientation(s)" in proc.stderr


def test_window_size_patch_is_the_default_and_volume_is_one_pass(tmp_path, model):
    # the threshold network has no context to lose: both window sizes must give the same label
    image, centre, radius = ball_image(size=(70, 50, 30), spacing=(1.0, 1.0, 1.0), centre_index=(35, 25, 15))
    patch, volume = segment(image, model), segment(image, model, window_size="volume")
    assert (patch.info["window_size"], patch.info["window"]) == ("patch", PATCH) and patch.info["windows"] > 1
    assert (volume.info["window_size"], volume.info["windows"]) == ("volume", 1)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(patch.label), sitk.GetArrayFromImage(volume.label))
    assert "window_size" not in segment(image, model, mode="official").info
    with pytest.raises(InputError, match="window size 'huge'"):
        segment(image, model, window_size="huge")
    source, report = tmp_path / "scan.nrrd", tmp_path / "report.json"
    sitk.WriteImage(image, str(source))
    run_dtc("infer", "--model", tmp_path / "model.pt", source, "-o", tmp_path / "label.nrrd",
            "--window-size", "volume", "--report", report)
    assert json.loads(report.read_text())["reports"][0]["windows"] == 1


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".mha"])
def test_cli_single_file_keeps_geometry_in_every_format(tmp_path, suffix):
    model_path = threshold_model_file(tmp_path / "model.pt")
    image, centre, radius = ball_image()
    source = tmp_path / f"scan{suffix}"
    sitk.WriteImage(image, str(source))
    out = tmp_path / "out" / f"scan-label{suffix}"
    run_dtc("infer", "--model", model_path, source, "-o", out, "--device", "cpu")
    label = sitk.ReadImage(str(out))
    assert_same_grid(label, sitk.ReadImage(str(source)))
    assert_labels_the_ball(label, centre, radius, band_mm=2.2)


def test_cli_folder_of_inputs_with_probability_and_report(tmp_path):
    model_path = threshold_model_file(tmp_path / "model.pt")
    folder = tmp_path / "scans"
    folder.mkdir()
    for name, size in (("a.nrrd", (37, 29, 17)), ("b.nii.gz", (30, 41, 19))):
        sitk.WriteImage(ball_image(size=size)[0], str(folder / name))
    (folder / "notes.txt").write_text("not an image")
    out, report = tmp_path / "labels", tmp_path / "report.json"
    proc = run_dtc("infer", "--model", model_path, folder, "-o", out, "--probability", "--largest-component",
                   "--report", report)
    assert sorted(p.name for p in out.iterdir()) == ["a-label.nrrd", "a-probability.nrrd",
                                                     "b-label.nrrd", "b-probability.nrrd"]
    assert proc.stderr.count("largest component applied") == 2
    reports = json.loads(report.read_text())["reports"]
    assert [r["largest_component"] for r in reports] == [True, True]
    probability = sitk.ReadImage(str(out / "b-probability.nrrd"))
    assert probability.GetPixelID() == sitk.sitkFloat32 and probability.GetSize() == (30, 41, 19)
    # Written into the scans' folder and run again: the earlier results are not taken for scans.
    for _ in range(2):
        proc = run_dtc("infer", "--model", model_path, folder, "-o", folder, "--probability")
    assert sorted(p.name for p in folder.iterdir() if p.suffix != ".txt") == sorted(
        ["a.nrrd", "a-label.nrrd", "a-probability.nrrd", "b.nii.gz", "b-label.nrrd", "b-probability.nrrd"])
    assert "skipping 4 earlier results" in proc.stderr


def test_cli_dicom_folder(tmp_path):
    model_path = threshold_model_file(tmp_path / "model.pt")
    image, centre, radius = ball_image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), spacing=(0.9, 1.3, 2.1))
    series = tmp_path / "dicom"
    series.mkdir()
    volume = sitk.Cast(image * 100, sitk.sitkInt16)
    for k in range(volume.GetDepth()):
        slice_ = volume[:, :, k]
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (("0008|0060", "MR"), ("0020|000d", "1.2.3"), ("0020|000e", "1.2.3.4"),
                           ("0008|0018", f"1.2.3.4.{k + 1}"),
                           ("0020|0013", str(k + 1)), ("0020|0032", "\\".join(map(str, position))),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0018|0050", "2.1"), ("0028|0030", "1.3\\0.9")):
            slice_.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()  # keep the UIDs set above: one series
        writer.SetFileName(str(series / f"{k:03d}.dcm"))
        writer.Execute(slice_)
    out = tmp_path / "dicom-label.nrrd"
    run_dtc("infer", "--model", model_path, series, "-o", out)
    run_dtc("infer", "--model", model_path, ".", "-o", tmp_path / "labels", cwd=series)  # named after the folder
    assert (tmp_path / "labels" / "dicom-label.nrrd").is_file()
    label = sitk.ReadImage(str(out))
    assert label.GetSize() == image.GetSize()
    np.testing.assert_allclose(label.GetSpacing(), image.GetSpacing(), atol=1e-4)
    assert_labels_the_ball(label, centre, radius, band_mm=2.2)
