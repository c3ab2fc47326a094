"""Preprocessing geometry: resampling to the model's spacing keeps the scan's physical extent."""
import numpy as np
import SimpleITK as sitk

from dtc_training.volumes import resample_like, resample_to_spacing


def _centre(image: sitk.Image) -> np.ndarray:
    return np.array(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))


def test_resampling_keeps_the_physical_centre_and_both_border_planes():
    # An oblique, anisotropic volume whose first and last two planes along every axis are labeled (two, so
    # that halving the resolution, where a new voxel centre falls between two old ones, keeps them).
    array = np.zeros((30, 40, 50), np.uint8)  # (z, y, x)
    border = [0, 1, -2, -1]
    array[border, :, :] = array[:, border, :] = array[:, :, border] = 1
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.9, 2.0))
    image.SetOrigin((10.0, -5.0, 3.0))
    angle = np.deg2rad(20)
    image.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1))
    for spacing in ((1.4, 1.8, 4.0), (1.0, 1.0, 1.0), (0.35, 0.45, 1.0)):
        resampled = resample_to_spacing(image, spacing, label=True)
        assert np.allclose(_centre(resampled), _centre(image), atol=1e-6)
        out = sitk.GetArrayFromImage(resampled)
        for axis in range(3):
            first, last = np.take(out, 0, axis=axis), np.take(out, -1, axis=axis)
            assert first.all() and last.all(), (spacing, axis)


def test_a_much_coarser_model_grid_still_covers_every_voxel_of_the_scan():
    image = sitk.GetImageFromArray(np.ones((14, 14, 14), np.float32))
    image.SetSpacing((0.1, 0.1, 0.1))
    coarse = resample_to_spacing(image, (1.0, 1.0, 1.0))
    back = sitk.GetArrayFromImage(resample_like(coarse, image))
    assert (back > 0).all()  # no border voxel fell outside the coarse grid
