"""Fine-tuning from a model file (`dtc train --init MODEL`): the run takes the model's architecture, patch,
spacing, k and label name, starts from its weights with a fresh optimizer, and trains with the DTC loss on
the user's labeled and unlabeled scans. What is checked here happens before any data is read."""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import la
from .config import fine_tuning_defaults
from .data import read_datalist
from .errors import InputError
from .model_io import load_model
from .volumes import TRAINING_ORIENTATION, orientation, read_image


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def init_settings(path: Path, given: dict) -> dict:
    """The TrainConfig values of a fine-tuning from the model file `path`: the fine-tuning defaults, then the
    model's n_filters, patch, spacing, k and label name, then the options `given` on the command line, which
    win except where they contradict the weights (--n-filters) or what they were trained on (--spacing): those
    are refused. The file is read whole and checked (a file that is not a DTC model, another architecture,
    damaged or non-finite weights) and must take one input channel in the training orientation; every
    problem names the file."""
    _, meta = load_model(path)
    problems = []
    if meta["in_channels"] != 1:
        problems.append(f"{path}: the model takes {meta['in_channels']} input channels; dtc train trains on one "
                        "scalar volume per case")
    trained_in = meta.get("orientation", TRAINING_ORIENTATION)
    if trained_in != TRAINING_ORIENTATION:
        problems.append(f"{path}: the model was trained on {trained_in} arrays; dtc train trains on "
                        f"{TRAINING_ORIENTATION} arrays")
    if given.get("n_filters", meta["n_filters"]) != meta["n_filters"]:
        problems.append(f"--n-filters {given['n_filters']}: {path} has {meta['n_filters']} filters, which its "
                        "weights fix; leave --n-filters out")
    spacing = meta.get("spacing")
    if "spacing" in given and spacing is not None and not np.allclose(given["spacing"], spacing, rtol=1e-4):
        problems.append(f"--spacing {_mm(given['spacing'])}: {path} was trained at {_mm(spacing)}, the grid its "
                        "weights know; leave --spacing out (scans are resampled to it)")
    if problems:
        raise InputError(problems)
    from_model = {"n_filters": meta["n_filters"], "patch_size": list(meta["patch_size"]), "spacing": spacing,
                  "k": float(meta["k"]), "la_zscore": meta.get("la_zscore", "stored")}
    if meta.get("label_name"):
        from_model["label_name"] = meta["label_name"]
    init = {"path": str(path.resolve()), "sha256": file_sha256(path)}
    return {**fine_tuning_defaults(given), **from_model, **given, "init": init}


def warn_of_other_grids(grids: dict[str, tuple[tuple, str]], spacing, init_path: str) -> None:
    """One warning line when scans (name: (spacing, orientation)) differ from the model's grid: they are
    resampled and reoriented to it, as for inference."""
    other = {name: (s, o) for name, (s, o) in grids.items()
             if o != TRAINING_ORIENTATION or (spacing is not None and not np.allclose(s, spacing, rtol=1e-4))}
    if not other:
        return
    name, (s, o) = next(iter(other.items()))
    model_grid = f"{_mm(spacing)}, " if spacing is not None else ""
    warnings.warn(f"{len(other)} of {len(grids)} scans are not on the grid of {init_path} ({model_grid}"
                  f"{TRAINING_ORIENTATION}), e.g. {name} ({_mm(s)}, {o}): they are "
                  f"{'resampled and ' if spacing is not None else ''}reoriented to it for the fine-tuning")


def image_grid(path: Path) -> tuple[tuple, str]:
    """(spacing, orientation) of a volume file from its header alone (a DICOM folder is read whole)."""
    if path.is_dir():
        image = read_image(path)
        return image.GetSpacing(), orientation(image)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader.GetSpacing(), sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(reader.GetDirection())


def _mm(spacing) -> str:
    return " x ".join(f"{s:g}" for s in spacing) + " mm"


def data_grids(datalist: Path | None, data) -> dict[str, tuple[tuple, str]]:
    """(spacing, orientation) of every scan of a run as stored: from the headers of a datalist's files, or
    those of the LA h5 arrays (0.625 mm, in the training orientation)."""
    if datalist is None:
        return {case["name"]: (la.SPACING, TRAINING_ORIENTATION)
                for case in data.labeled + data.unlabeled + data.validation}
    return {entry["image"]: image_grid(Path(entry["image"]))
            for group in read_datalist(datalist).values() for entry in group}
