"""Doubt from DTC's two heads, at no extra network pass: where the segmentation head and the level-set head
(trained to agree through the task transform sigmoid(-k * levelset)) disagree, the model is unsure.

Per voxel, in the same forward pass as the segmentation:
    P = sigmoid(seg)                  the segmentation head's foreground probability
    Q = sigmoid(-k * levelset)        the level-set head's, through DTC's task transform (k: the model's)
    doubt = |P - Q|                   in [0, 1]
Each is blended over windows and averaged over test-time orientations like the probabilities, then
resampled onto the scan's grid. The scan's score is the mean doubt over the voxels where either head says
foreground (P > 0.5 or Q > 0.5): background that both heads call background adds nothing, so the score
does not change with the field of view around the structure."""
from __future__ import annotations

import numpy as np
import torch

DEFAULT_K = 1500.0  # the task transform's steepness of models whose file does not record it
CHANNELS = ("probability", "doubt", "levelset_probability")  # what a network asked for doubt returns, in order


def doubt_channels(prob: torch.Tensor, levelset: torch.Tensor, k: float) -> torch.Tensor:
    """(P, |P - Q|, Q) as channels, in float32, from a window batch's sigmoid(seg) and tanh level set."""
    prob = prob.float()
    levelset_prob = torch.sigmoid(-k * levelset.float())
    return torch.cat([prob, (prob - levelset_prob).abs(), levelset_prob], dim=1)


def doubt_score(prob: np.ndarray, doubt: np.ndarray, levelset_prob: np.ndarray, threshold: float = 0.5) -> float | None:
    """Mean doubt over the voxels where either head says foreground; None where neither finds any."""
    either = (prob > threshold) | (levelset_prob > threshold)
    return float(doubt[either].mean(dtype=np.float64)) if either.any() else None
