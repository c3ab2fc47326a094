"""Bad input to `dtc infer` and `segment`: a clear error naming the file (exit code 2 from the CLI), no
guessing, nothing written; and volumes far smaller or larger than the patch are segmented."""
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_dtc
from dtc_training.infer import Model, segment
from dtc_training.volumes import VolumeError
from test_infer import ball_image, threshold_model_file


@pytest.fixture
def model_path(tmp_path):
    return threshold_model_file(tmp_path / "model.pt")


def write(tmp_path, name, image):
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    return path


def expect_error(tmp_path, model_path, source, *messages):
    out = tmp_path / "out" / "label.nrrd"
    proc = run_dtc("infer", "--model", model_path, source, "-o", out, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for message in messages:
        assert message in proc.stderr
    assert not out.exists()


def test_unreadable_file(tmp_path, model_path):
    source = tmp_path / "scan.nrrd"
    source.write_text("NRRD0004\nthis is not a header\n")
    expect_error(tmp_path, model_path, source, "scan.nrrd", "not a readable image")


def test_missing_file(tmp_path, model_path):
    expect_error(tmp_path, model_path, tmp_path / "nowhere.nii.gz", "nowhere.nii.gz", "not found")


@pytest.mark.parametrize("name, image, message", [
    ("flat.nrrd", sitk.Image([20, 20], sitk.sitkFloat32), "2D"),
    ("series.nii.gz", sitk.Image([12, 12, 8, 3], sitk.sitkFloat32), "4D"),
    ("rgb.nrrd", sitk.Image([12, 12, 8], sitk.sitkVectorFloat32, 3), "components"),
    ("one-slice.nrrd", sitk.Image([40, 40, 1], sitk.sitkFloat32), "single slice"),
])
def test_not_a_3d_scalar_volume(tmp_path, model_path, name, image, message):
    expect_error(tmp_path, model_path, write(tmp_path, name, image), name, message)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_voxels(tmp_path, model_path, bad):
    array = np.zeros((8, 30, 30), np.float32)
    array[4, 10, 10] = bad
    expect_error(tmp_path, model_path, write(tmp_path, "bad.nrrd", sitk.GetImageFromArray(array)),
                 "bad.nrrd", "NaN or Inf")


def test_nan_in_a_numpy_array(model_path):
    array = np.zeros((30, 30, 8), np.float32)
    array[1, 2, 3] = np.nan
    with pytest.raises(VolumeError, match="NaN or Inf"):
        segment(array, Model.load(model_path, "cpu"))
    with pytest.raises(VolumeError, match="2D"):
        segment(np.zeros((30, 30), np.float32), Model.load(model_path, "cpu"))


@pytest.mark.parametrize("content", [b"", b"garbage" * 10])
def test_model_file_that_is_not_a_model(tmp_path, content):
    bad_model = tmp_path / "model.pt"
    bad_model.write_bytes(content)
    source = write(tmp_path, "scan.nrrd", ball_image()[0])
    expect_error(tmp_path, bad_model, source, "model.pt")


def test_a_bad_input_in_a_folder_stops_the_run_before_any_label_is_written(tmp_path, model_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    write(folder, "a.nrrd", ball_image()[0])  # good, and first in the folder
    bad = np.zeros((8, 30, 30), np.float32)
    bad[4, 10, 10] = np.nan
    write(folder, "b.nrrd", sitk.GetImageFromArray(bad))
    write(folder, "c.nrrd", sitk.GetImageFromArray(np.zeros((1, 30, 30), np.float32)))
    proc = run_dtc("infer", "--model", model_path, folder, "-o", tmp_path / "out", check=False)
    assert proc.returncode == 2 and "2 problems" in proc.stderr, proc.stderr
    assert "b.nrrd: 1 voxels are NaN or Inf" in proc.stderr and "c.nrrd: volume of size" in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_output_that_cannot_be_written_fails_before_any_work(tmp_path, model_path):
    source = write(tmp_path, "scan.nrrd", ball_image()[0])
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run_dtc("infer", "--model", model_path, source, "-o", blocker / "label.nrrd", check=False)
    assert proc.returncode == 2 and "a-file" in proc.stderr and "Traceback" not in proc.stderr
    label = tmp_path / "label.nrrd"
    proc = run_dtc("infer", "--model", model_path, source, "-o", label, "--report", blocker / "report.json",
                   check=False)
    assert proc.returncode == 2 and "a-file" in proc.stderr and "Traceback" not in proc.stderr
    assert not label.exists(), "the report's folder is checked before the scan is segmented"


@pytest.mark.parametrize("device", ["gpu", "cuda:99"])
def test_a_device_that_cannot_be_used_is_refused(tmp_path, model_path, device):
    source = write(tmp_path, "scan.nrrd", ball_image()[0])
    proc = run_dtc("infer", "--model", model_path, source, "-o", tmp_path / "label.nrrd", "--device", device,
                   check=False)
    assert proc.returncode == 2 and f"--device {device}" in proc.stderr and "Traceback" not in proc.stderr


def test_an_existing_folder_as_output_receives_the_label(tmp_path, model_path):
    source = write(tmp_path, "scan.nrrd", ball_image()[0])
    (tmp_path / "out.nrrd").mkdir()  # a folder, even with an image suffix
    run_dtc("infer", "--model", model_path, source, "-o", tmp_path / "out.nrrd")
    assert (tmp_path / "out.nrrd" / "scan-label.nrrd").is_file()


def test_volume_far_smaller_than_the_patch_is_padded(model_path):
    image, centre, radius = ball_image(size=(9, 7, 5), spacing=(1.0, 1.0, 1.0), centre_index=(4, 3, 2),
                                       radius_mm=2.5, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    for mode in ("fast", "official"):
        result = segment(image, Model.load(model_path, "cpu"), mode=mode)
        assert result.label.GetSize() == (9, 7, 5) and result.info["windows"] == 1
        assert sitk.GetArrayFromImage(result.label).sum() == sitk.GetArrayFromImage(image).astype(bool).sum()


def test_volume_larger_than_the_memory_budget_is_windowed(model_path):
    # A budget of a few patches stands in for a huge volume: it must be cut into windows whose
    # blended result still labels the ball exactly (the threshold network has no context to lose).
    image, centre, radius = ball_image(size=(90, 70, 40), spacing=(1.0, 1.0, 1.0), centre_index=(45, 35, 20),
                                       radius_mm=15, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    model = Model.load(model_path, "cpu")
    whole = segment(image, model, window_size="volume")
    windowed = segment(image, model, window_size="volume", memory_gb=64 * 48 * 48 * 32 * 1e-9)
    assert whole.info["windows"] == 1 and windowed.info["windows"] > 4
    np.testing.assert_array_equal(sitk.GetArrayFromImage(windowed.label), sitk.GetArrayFromImage(whole.label))
