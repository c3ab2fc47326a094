"""The official DTC augmentation, built from MONAI transforms, on channel-first numpy arrays:
a 90-degree rotation in the x-y plane with k uniform in {0, 1, 2, 3}, then always a flip on x or y,
zero-padding to the patch where a volume is smaller, a random crop, then the level-set target. Optional
intensity and low-contrast augmentation (not in the official method) follow the crop, on the z-scored image
alone, as does optional spatial augmentation (small random rotations and scaling of the crop); the optional whole-volume
level set (not official either) is computed once per case and cropped with the image."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from monai.transforms import (
    Compose,
    Flipd,
    MapTransform,
    OneOf,
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandSpatialCropd,
    SpatialPadd,
)

from .levelset import compute_levelset


class LevelSetd(MapTransform):
    """Adds `levelset`, the DTC target of the (cropped) `label`, with the zero level at `boundary`."""

    def __init__(self, keys, boundary: str = "official"):
        super().__init__(keys)
        self.boundary = boundary

    def __call__(self, data):
        d = dict(data)
        d["levelset"] = compute_levelset(np.asarray(d["label"])[0], self.boundary)[None]
        return d


def intensity_augmentation() -> list:
    # Ranges of the common nnU-Net-style recipe; the geometry transforms' random draws are unaffected
    # because these come after them in the Compose.
    return [
        RandScaleIntensityd("image", factors=0.25, prob=0.15),
        RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.3),
        RandGaussianNoised("image", std=0.1, prob=0.1),
    ]


def low_contrast_augmentation() -> list:
    # After the whole-scan z-score some scans' atrium sits barely above its background (mean 0.3-0.9 against
    # 1.9 +- 0.8 in the training cases), and the network fails on them; scaling a fifth of the crops by
    # 0.2-1.0 shows it such contrast.
    return [RandScaleIntensityd("image", factors=(-0.8, 0.0), prob=0.2)]


def with_volume_levelset(case: dict, patch_size: Sequence[int], boundary: str = "official") -> dict:
    """`case` zero-padded to the patch (in-plane to its larger side, since the rotation swaps x and y) with
    the level set of its whole label. The 90-degree rotations and flips that follow commute with the level
    set, so cropping this one equals computing it on the whole augmented volume, at a fraction of the cost."""
    side = max(patch_size[0], patch_size[1])
    pad = SpatialPadd(["image", "label"], spatial_size=[side, side, patch_size[2]], mode="constant")
    padded = {k: np.asarray(v)[0] for k, v in pad({k: case[k][None] for k in ("image", "label")}).items()}
    return {**case, **padded, "levelset": compute_levelset(padded["label"], boundary)}


def spatial_augmentation(keys: list[str]) -> list:
    # nnU-Net-style ranges: rotations up to 15 degrees about each axis and scaling by 0.85-1.15, on the
    # crop; labels by nearest neighbour. Image and label are zero-padded where the crop rotates in from
    # outside; a whole-volume level set is extended from the crop's edge instead, since 0 would mean "on the
    # boundary" there.
    return [RandAffined(keys, prob=0.3, rotate_range=[math.radians(15)] * 3, scale_range=[0.15] * 3,
                        mode=["nearest" if k == "label" else "bilinear" for k in keys],
                        padding_mode=["border" if k == "levelset" else "zeros" for k in keys])]


def training_augmentation(patch_size: Sequence[int], labeled: bool, intensity: bool = False,
                          volume_levelset: bool = False, spatial: bool = False, low_contrast: bool = False,
                          patch_levelset: bool = True, levelset_boundary: str = "official") -> Compose:
    """With `volume_levelset`, labeled items carry their precomputed `levelset` (`with_volume_levelset`);
    otherwise they get the level set of their crop (zero level at `levelset_boundary`), unless
    `patch_levelset` is False (the training step then computes it on its device)."""
    keys = ["image", "label"] if labeled else ["image"]
    if labeled and volume_levelset:
        keys.append("levelset")
    steps = [
        # MONAI draws k from {1..max_k} when it rotates; prob 3/4 makes k uniform over {0, 1, 2, 3}.
        RandRotate90d(keys, prob=0.75, max_k=3, spatial_axes=(0, 1)),
        OneOf([Flipd(keys, spatial_axis=0), Flipd(keys, spatial_axis=1)]),
        SpatialPadd(keys, spatial_size=patch_size, mode="constant"),
        RandSpatialCropd(keys, roi_size=patch_size, random_size=False),
    ]
    if spatial:
        steps += spatial_augmentation(keys)
    if intensity:
        steps += intensity_augmentation()
    if low_contrast:
        steps += low_contrast_augmentation()
    if labeled and patch_levelset and not volume_levelset:
        steps.append(LevelSetd("label", levelset_boundary))
    return Compose(steps, lazy=False)
