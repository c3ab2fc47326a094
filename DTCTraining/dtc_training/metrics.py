"""Segmentation metrics with the semantics of medpy.metric.binary, which the DTC/UA-MT literature reports
(reference section 7), in voxels (as published) and in mm:

- surfaces are the voxels removed by one erosion with the face-connected (6-neighbour) structuring
  element, the array edge counting as outside;
- ASD is one-directional: mean distance from the prediction's surface to the ground truth's;
- HD95 is the 95th percentile of the distances of both directions pooled together (not the maximum of the
  two directed percentiles, as MONAI computes it);
- an empty prediction scores Dice = Jaccard = HD95 = ASD = 0, as the official test code scores it;
- an empty ground truth with a non-empty prediction scores Dice = Jaccard = 0 and no distances (NaN).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

METRICS = ("dice", "jaccard", "hd95_voxels", "asd_voxels", "hd95_mm", "asd_mm")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two masks (nonzero = inside); 0 when both are empty."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))


def surface_distances(source: np.ndarray, target: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Distance from every surface voxel of `source` to the nearest surface voxel of `target`."""
    to_target = ndimage.distance_transform_edt(~surface(target), sampling=spacing)
    return to_target[surface(source)]


def case_metrics(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> dict:
    """All METRICS for one case, plus flags for the empty cases. `spacing` in mm, in the arrays' axis order."""
    pred, gt = np.asarray(prediction) > 0, np.asarray(truth) > 0
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    result = {"empty_prediction": not pred.any(), "empty_truth": not gt.any()}
    if result["empty_prediction"]:
        return {**dict.fromkeys(METRICS, 0.0), **result}
    result["dice"] = dice(pred, gt)
    result["jaccard"] = result["dice"] / (2.0 - result["dice"])  # J = D / (2 - D)
    for unit, sampling in (("voxels", None), ("mm", spacing)):
        if result["empty_truth"]:
            hd95 = asd = math.nan
        else:
            forward = surface_distances(pred, gt, sampling)
            backward = surface_distances(gt, pred, sampling)
            hd95 = float(np.percentile(np.concatenate([forward, backward]), 95))
            asd = float(forward.mean())
        result[f"hd95_{unit}"], result[f"asd_{unit}"] = hd95, asd
    return {key: result[key] for key in (*METRICS, "empty_prediction", "empty_truth")}


def mean_metrics(cases: Sequence[dict]) -> dict:
    """Mean of each metric over the cases where it is defined (NaN distances of empty ground truths left out)."""
    means = {}
    for key in METRICS:
        values = [c[key] for c in cases if not math.isnan(c[key])]
        means[key] = float(np.mean(values)) if values else math.nan
    return means
