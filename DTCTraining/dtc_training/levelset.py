"""The level-set target of DTC: the official normalised signed distance of a binary mask.

Negative inside, positive outside, 0 on the inner boundary; the inside and outside distances are each
min-max scaled into [0, 1] over the patch (so this is not a metric distance), in voxel units, on the
cropped patch. An empty mask gives all zeros, as in the official code; so does a patch that is all
foreground, where the official code divides by zero. The "half-voxel" boundary (not official) moves the zero
level half a voxel outward, onto the faces between foreground and background voxels, so that {z < 0} is the
mask exactly (docs/benchmarks.md, hypothesis 1).

The distance transforms run where the masks are: scipy's on the CPU (in DataLoader workers), an exact
separable transform in torch on a GPU, so that a fast GPU step does not wait for level sets computed on
a few CPU cores. MONAI's `distance_transform_edt` would need cuCIM on the GPU, which is not a dependency."""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

_CHUNK_ELEMENTS = 1 << 26  # bounds the (lines, n, n) intermediate of a GPU pass to 256 MB
BOUNDARIES = ("official", "half-voxel")  # where the zero level lies: on the inner boundary, or half a voxel out


def _squared_distance_pass(squared: torch.Tensor, dim: int) -> torch.Tensor:
    """One 1D pass of the separable squared distance: out[i] = min_j (i - j)^2 + squared[j] along `dim`."""
    n = squared.shape[dim]
    positions = torch.arange(n, device=squared.device, dtype=squared.dtype)
    parabolas = (positions[:, None] - positions[None, :]) ** 2  # [i, j]
    moved = squared.movedim(dim, -1)
    lines = moved.reshape(-1, n)
    out = torch.empty_like(lines)
    step = max(1, _CHUNK_ELEMENTS // (n * n))
    for start in range(0, lines.shape[0], step):
        out[start:start + step] = (lines[start:start + step, None, :] + parabolas).amin(dim=-1)
    return out.reshape(moved.shape).movedim(-1, dim)


def _scipy_distances(features: torch.Tensor) -> torch.Tensor:
    present = features.flatten(1).any(dim=1)
    return torch.stack([torch.from_numpy(ndimage.distance_transform_edt(~f.numpy())) if p
                        else torch.zeros(f.shape, dtype=torch.float64) for f, p in zip(features, present)])


def _torch_distances(features: torch.Tensor) -> torch.Tensor:
    """Exact: three 1D passes of the squared distance, one per axis (Saito and Toriwaki); float32 holds
    those integer squared distances exactly."""
    squared = torch.where(features, 0.0, torch.inf)  # masked ops that need no device sync
    for dim in (1, 2, 3):
        squared = _squared_distance_pass(squared, dim)
    present = features.flatten(1).any(dim=1)
    return torch.where(present[:, None, None, None], squared.double(), 0.0).sqrt()


def _distances(features: torch.Tensor) -> torch.Tensor:
    """float64 distance to the nearest True voxel of each item; 0 throughout an item without one."""
    return (_scipy_distances if features.device.type == "cpu" else _torch_distances)(features)


def _scaled(distance: torch.Tensor) -> torch.Tensor:
    low = distance.amin(dim=(1, 2, 3), keepdim=True)
    span = distance.amax(dim=(1, 2, 3), keepdim=True) - low
    return torch.where(span > 0, (distance - low) / span, 0.0)  # a constant map scales to 0


def _inner_boundary(inside: torch.Tensor) -> torch.Tensor:
    """Foreground voxels with a face-neighbour in the background; beyond the patch counts as foreground."""
    outside = torch.nn.functional.pad((~inside).to(torch.uint8), (1, 1, 1, 1, 1, 1))
    core = (slice(None), slice(1, -1), slice(1, -1), slice(1, -1))
    neighbour_outside = torch.zeros_like(inside)
    for dim in (1, 2, 3):
        for shift in (-1, 1):
            neighbour_outside |= outside.roll(shift, dims=dim)[core].bool()
    return inside & neighbour_outside


def levelsets(masks: torch.Tensor, boundary: str = "official") -> torch.Tensor:
    """float32 level sets of a batch of 3D masks (B, X, Y, Z; nonzero = foreground), on the masks' device;
    `boundary` one of BOUNDARIES."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"level-set boundary {boundary!r}: one of {', '.join(BOUNDARIES)}")
    inside = masks != 0
    distances = _distances(torch.cat([inside, ~inside]))  # to the foreground, then to the background
    to_foreground, to_background = distances.chunk(2)
    if boundary == "half-voxel":
        # A voxel's distance to the nearest voxel of the other side less half a voxel is its distance to the
        # face between them along an axis: the zero level on the label's surface, every voxel keeping its sign.
        # Each side's shifted distance is then scaled into [0, 1] as officially (its maximum becomes 1); the
        # clamp keeps the other side at 0, and an item that lacks a side at 0 throughout, as officially.
        half = lambda distance: _scaled((distance - 0.5).clamp(min=0))
        return (half(to_foreground) - half(to_background)).float()
    levelset = _scaled(to_foreground) - _scaled(to_background)
    return levelset.masked_fill(_inner_boundary(inside), 0).float()


def compute_levelset(mask: np.ndarray, boundary: str = "official") -> np.ndarray:
    """float32 level set of one 3D mask (any dtype; nonzero = foreground)."""
    return levelsets(torch.as_tensor(np.asarray(mask))[None], boundary)[0].numpy()
