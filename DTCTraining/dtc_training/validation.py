"""Validation Dice during training: sliding-window prediction over held-out labeled cases."""
from __future__ import annotations

import numpy as np
import torch
from monai.inferers import sliding_window_inference


@torch.no_grad()
def validation_dice(model, cases: list[dict], patch_size, device) -> float:
    """Mean Dice of (sigmoid(seg) > 0.5) against each case's label."""
    dices = []
    for case in cases:
        image = torch.as_tensor(case["image"])[None, None].to(device)
        prob = sliding_window_inference(image, patch_size, 4, lambda x: torch.sigmoid(model(x)[0].float()),
                                        overlap=0.25, mode="gaussian", padding_mode="constant")
        pred = prob[0, 0].cpu().numpy() > 0.5
        label = case["label"].astype(bool)
        denominator = pred.sum() + label.sum()
        dices.append(2.0 * np.logical_and(pred, label).sum() / denominator if denominator else 1.0)
    return float(np.mean(dices))
