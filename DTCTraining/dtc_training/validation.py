"""Validation Dice during training, with the fast sliding-window predictor and window size (the training
patch) that `dtc infer` uses by default."""
from __future__ import annotations

import numpy as np

from .sliding_window import FoldedVNet, predict_fast, window_sides


def validation_dice(model, cases: list[dict], patch_size, device, n_filters: int) -> float:
    """Mean Dice of (probability > 0.5) against each case's label (1 where both are empty)."""
    folded = FoldedVNet(model)  # an eval-mode copy: the training network keeps its mode and weights
    dices = []
    for case in cases:
        prob, _ = predict_fast(folded, case["image"], patch_size, device, n_filters,
                               max_sides=window_sides(patch_size, "patch"))
        pred, label = prob > 0.5, case["label"].astype(bool)
        denominator = pred.sum() + label.sum()
        dices.append(2.0 * np.logical_and(pred, label).sum() / denominator if denominator else 1.0)
    return float(np.mean(dices))
