"""Reading and preprocessing volumes with SimpleITK. Arrays are float32 in (x, y, z) order, the order
of the LA h5 files and of the patch size (112, 112, 80)."""
from __future__ import annotations

import errno
import gzip
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .files import WriteError, atomic_write_named


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
    """Write atomically and verified (a failure, a kill or a full disk never leaves an empty or half-written
    file under the name, also for .nhdr/.mhd with their data file); a failure is a WriteError naming it."""
    try:
        atomic_write_named(path, lambda staged: sitk.WriteImage(image, str(staged), compress),
                           verify=lambda staged: check_image_file(staged, image))
    except RuntimeError as e:
        raise WriteError(errno.EIO, f"cannot write the image ({_last_line(e)})", str(path)) from None


def check_image_file(path: str | Path, image: sitk.Image | None = None) -> None:
    """What a writer has just left at `path` reads back: its header (SimpleITK's ReadImageInformation), of
    `image`'s size when given, and for NIfTI all its voxel data, since ITK's NIfTI writer reports a short write
    (a full disk) on stderr only, where the NRRD and MetaImage writers raise. A WriteError otherwise."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise WriteError(errno.EIO, f"the written image does not read back ({_last_line(e)})", str(path)) from None
    if image is not None and tuple(reader.GetSize()) != tuple(image.GetSize()):
        raise WriteError(errno.EIO, f"the written image reads back as size {reader.GetSize()}, not "
                                    f"{image.GetSize()}", str(path))
    name = Path(path).name.lower()
    if name.endswith((".nii", ".nii.gz")):
        voxel = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(), reader.GetNumberOfComponents())
        expected = int(np.prod(reader.GetSize())) * voxel.GetSizeOfPixelComponent() * reader.GetNumberOfComponents()
        held = _gzip_length(path) if name.endswith(".gz") else os.path.getsize(path) - 348  # the NIfTI-1 header
        if held < expected:
            raise WriteError(errno.EIO, f"the written image holds {max(held, 0)} of its {expected} bytes of voxels",
                             str(path))


def _gzip_length(path: str | Path) -> int:
    """The decompressed length of a gzip file, -1 where the stream is cut short."""
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    return total
                total += len(chunk)
    except (EOFError, OSError):
        return -1


def _last_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__


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
