"""Test-time augmentation over the orientations the model was trained on: training rotates every crop
by a multiple of 90 degrees in the x-y plane and flips it on x or y (never on z), so the network has seen
the 8 in-plane orientations of each scan. Averaging its probabilities over some of them, each mapped back,
is a cheap ensemble: `count` orientations cost `count` passes."""
from __future__ import annotations

from typing import Callable

import numpy as np

# (swap x and y, flipped axes); the first 4 are the flips alone, which need no change of shape
ORIENTATIONS = ((False, ()), (False, (0,)), (False, (1,)), (False, (0, 1)),
                (True, ()), (True, (0,)), (True, (1,)), (True, (0, 1)))
COUNTS = (1, 2, 4, 8)


def _orient(array: np.ndarray, swap: bool, axes: tuple) -> np.ndarray:
    out = np.flip(array, axes) if axes else array
    return np.ascontiguousarray(out.swapaxes(0, 1) if swap else out)


def _restore(array: np.ndarray, swap: bool, axes: tuple) -> np.ndarray:
    """The inverse of `_orient` on the last three axes, so that a result with channels first maps back too."""
    out = array.swapaxes(-3, -2) if swap else array
    return np.flip(out, tuple(a - 3 for a in axes)) if axes else out


def average_over_orientations(predict: Callable[[np.ndarray], tuple[np.ndarray, dict]], array: np.ndarray,
                              count: int = 1) -> tuple[np.ndarray, dict]:
    """Mean of `predict`'s probabilities over the first `count` ORIENTATIONS of the (x, y, z) `array`;
    `predict` returns (probabilities, info), the probabilities (x, y, z) or (channels, x, y, z), and the
    info of the last pass is returned with `orientations`."""
    if count not in COUNTS:
        raise ValueError(f"orientations {count}: choose one of {', '.join(map(str, COUNTS))}")
    total, info = None, {}
    for swap, axes in ORIENTATIONS[:count]:
        prob, info = predict(_orient(array, swap, axes))
        prob = _restore(prob, swap, axes)
        total = prob.astype(np.float32, copy=False) if total is None else total + prob
    return (total if count == 1 else total / count), {**info, "orientations": count}
