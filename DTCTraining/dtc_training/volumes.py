"""Reading and preprocessing volumes with SimpleITK. Arrays are float32 in (x, y, z) order, the order
of the LA h5 files and of the patch size (112, 112, 80)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .files import atomic_write_named


class VolumeError(InputError):
    """A volume that cannot be used; the message names the file and the problem."""


def read_image(path: str | Path) -> sitk.Image:
    """Read any SimpleITK-readable 3D scalar volume, or the series of a DICOM folder."""
    path = Path(path)
    if not path.exists():
        raise VolumeError(f"{path}: file not found")
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            files = reader.GetGDCMSeriesFileNames(str(path))
            if not files:
                raise VolumeError(f"{path}: folder holds no DICOM series")
            reader.SetFileNames(files)
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise VolumeError(f"{path}: not a readable image ({str(e).strip().splitlines()[-1]})") from None
    check_image(image, path)
    return image


def write_image(image: sitk.Image, path: str | Path, compress: bool = True) -> None:
    """Write atomically (a failure or a kill never leaves a half-written file, also for .nhdr/.mhd with
    their data file); a failure is an error naming the file."""
    try:
        atomic_write_named(path, lambda staged: sitk.WriteImage(image, str(staged), compress))
    except (RuntimeError, OSError) as e:
        raise VolumeError(f"{path}: cannot write the image ({str(e).strip().splitlines()[-1]})") from None


def check_image(image: sitk.Image, name: str | Path) -> None:
    if image.GetDimension() != 3:
        raise VolumeError(f"{name}: image is {image.GetDimension()}D, a 3D volume is needed")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(
            f"{name}: image has {image.GetNumberOfComponentsPerPixel()} components per voxel "
            "(vector/RGB); a scalar volume is needed"
        )


def check_volume(image: sitk.Image, name: str | Path) -> None:
    """A 3D scalar volume of finite voxels, at least two voxels along every axis."""
    check_image(image, name)
    check_finite(sitk.GetArrayViewFromImage(image), name)
    if min(image.GetSize()) < 2:
        raise VolumeError(f"{name}: volume of size {image.GetSize()} is a single slice; a 3D volume is needed")


def to_array(image: sitk.Image, name: str | Path = "image", dtype=np.float32) -> np.ndarray:
    """Voxel array in (x, y, z) order; NaN or Inf voxels are an error."""
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(dtype, copy=False)
    check_finite(array, name)
    return np.ascontiguousarray(array)


def check_finite(array: np.ndarray, name: str | Path) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise VolumeError(f"{name}: {bad} voxels are NaN or Inf")


def from_array(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Image from an (x, y, z) array with the geometry of `reference`."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.CopyInformation(reference)
    return image


def zscore(array: np.ndarray) -> np.ndarray:
    """Z-score over the whole scan, the LA preprocessing (reference section 6)."""
    std = float(array.std())
    return ((array - array.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def resample_to_spacing(image: sitk.Image, spacing: Sequence[float], label: bool = False) -> sitk.Image:
    """Resample onto a grid of `spacing` (mm) with the same direction, centred on the same physical extent,
    so that neither border loses a plane to a grid shifted by half the change in spacing."""
    old_size, old_spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
    new_spacing = np.asarray(spacing, dtype=float)
    # Rounded up (less a rounding margin): a grid smaller than the scan would leave border voxels outside it.
    new_size = np.maximum(np.ceil(old_size * old_spacing / new_spacing - 1e-6), 1).astype(int)
    shift = ((old_size - 1) * old_spacing - (new_size - 1) * new_spacing) / 2  # along the image axes
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin()) + direction @ shift
    interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    return sitk.Resample(
        image, [int(s) for s in new_size], sitk.Transform(), interpolator,
        [float(o) for o in origin], [float(s) for s in new_spacing], image.GetDirection(), 0, image.GetPixelID(),
    )


def resample_like(image: sitk.Image, reference: sitk.Image, label: bool = False) -> sitk.Image:
    """Resample `image` onto the exact grid of `reference` (used to bring results back to the input)."""
    interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, 0, image.GetPixelID())


# The axis orientation of the arrays models train on, in ITK's DICOM letters (each axis runs towards
# the letter's side). The LA h5 arrays carry no direction, which reads as identity: "LPS".
TRAINING_ORIENTATION = "LPS"


def orientation(image: sitk.Image) -> str:
    """The image's axis orientation in ITK's DICOM letters (the closest one for oblique scans)."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def reorient(image: sitk.Image, code: str = TRAINING_ORIENTATION) -> sitk.Image:
    """The same voxels in the same physical space, axes permuted and flipped to run along `code`: a scan
    acquired sagittally or coronally, or stored with permuted or flipped axes, reaches the network as the
    axial training arrays did. The image itself when it is so already."""
    return image if orientation(image) == code else sitk.DICOMOrient(image, code)


def preprocess(image: sitk.Image, spacing: Sequence[float] | None, name: str | Path = "image") -> tuple[np.ndarray, sitk.Image]:
    """The model's input preprocessing: reorientation to the training orientation, optional resampling to
    `spacing`, then whole-scan z-score. Returns the array and the image whose grid the array lives on."""
    image = reorient(image)
    if spacing is not None and not np.allclose(image.GetSpacing(), spacing):
        image = resample_to_spacing(sitk.Cast(image, sitk.sitkFloat32), spacing)
    return zscore(to_array(image, name)), image


# ---- file names ----------------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")


def image_suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), path.suffix.lower())


def file_stem(path: Path) -> str:
    """The file name without its image suffix (case.nii.gz -> case)."""
    return path.name[: len(path.name) - len(image_suffix(path))]
