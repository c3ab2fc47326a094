"""The UA-MT / DTC layout of the LA data: `<root>/2018LA_Seg_Training Set/<case>/mri_norm2.h5`
(datasets `image`, float32 already z-scored, and `label`, uint8; axes x, y, z; 0.625 mm isotropic) and
`<root>/train.list` with the case ids in literature order. UA-MT's code names the cases folder itself and reads
`../train.list`; that folder is accepted as the root too."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from .errors import InputError

CASES_FOLDER = "2018LA_Seg_Training Set"
SPACING = (0.625, 0.625, 0.625)


def layout_root(root: str | Path) -> Path:
    """The folder holding the cases folder and the case lists, given it or the cases folder."""
    root = Path(root)
    return root.parent if root.name == CASES_FOLDER else root


def case_path(root: str | Path, case_id: str) -> Path:
    return layout_root(root) / CASES_FOLDER / case_id / "mri_norm2.h5"


def read_case_list(root: str | Path, name: str = "train.list") -> list[str]:
    path = layout_root(root) / name
    if not path.is_file():
        raise InputError(f"{path}: case list not found (the UA-MT layout keeps {name} beside the "
                         f"'{CASES_FOLDER}' folder)")
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def read_case(root: str | Path, case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, label uint8), both (x, y, z)."""
    path = case_path(root, case_id)
    try:
        with h5py.File(path, "r") as f:
            image, label = f["image"][:].astype(np.float32), f["label"][:].astype(np.uint8)
    except FileNotFoundError:
        raise InputError(f"{path}: case file not found") from None
    except (OSError, KeyError) as e:
        raise InputError(f"{path}: not a readable LA case (datasets 'image' and 'label' expected): {e}") from None
    if image.ndim != 3 or image.shape != label.shape:
        raise InputError(f"{path}: image {image.shape} and label {label.shape} must be 3D and of one shape")
    if not np.isfinite(image).all():
        raise InputError(f"{path}: image has NaN or Inf voxels")
    return image, label
