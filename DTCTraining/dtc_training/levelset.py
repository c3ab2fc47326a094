"""The level-set target of DTC: the official normalised signed distance of a binary mask.

Negative inside, positive outside, 0 on the inner boundary; the inside and outside distances are each
min-max scaled into [0, 1] over the patch (so this is not a metric distance), in voxel units, on the
cropped patch. An empty mask gives all zeros, as in the official code. Where the official code divides
by zero (a patch that is all foreground) the outside term is 0 here instead of NaN."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

_FACE_NEIGHBOURS = ndimage.generate_binary_structure(3, 1)


def _scaled(distance: np.ndarray) -> np.ndarray:
    low, high = distance.min(), distance.max()
    return (distance - low) / (high - low) if high > low else np.zeros_like(distance)


def compute_levelset(mask: np.ndarray) -> np.ndarray:
    """float32 level set of a 3D mask (any dtype; nonzero = foreground)."""
    inside = np.asarray(mask).astype(bool)
    if not inside.any():
        return np.zeros(inside.shape, np.float32)
    outside = ~inside
    levelset = _scaled(ndimage.distance_transform_edt(outside)) - _scaled(ndimage.distance_transform_edt(inside))
    # Inner boundary: foreground voxels with a face-neighbour in the background; the patch border is not one.
    boundary = inside & ~ndimage.binary_erosion(inside, _FACE_NEIGHBOURS, border_value=1)
    levelset[boundary] = 0
    return levelset.astype(np.float32)
