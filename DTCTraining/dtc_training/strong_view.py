"""The strong view of `dtc train --cross-view`: the unlabeled crops of a batch perturbed in intensity only,
so that each voxel still corresponds to the same voxel of the weak view (the crop as loaded). A batch
operation on the training device keyed by the iteration, not a per-item MONAI transform in the DataLoader
workers (`transforms`): it needs the crops already batched beside their weak views."""
from __future__ import annotations

import numpy as np
import torch

# The images are z-scored, so these are in standard deviations of the scan's intensities.
CONTRAST = (0.7, 1.3)  # per-item scale: a view that differs clearly from the weak one, the atrium still visible
SHIFT = (-0.3, 0.3)  # per-item offset: small against the atrium's mean of about 1.9 in the training scans
NOISE_SIGMA = 0.1  # voxel-wise Gaussian noise: the largest the default intensity augmentation adds
# A nonzero last word of the seed's entropy, so that no other seed of a run (the batches' [seed, stream,
# position], the ranks' dropout [seed, rank, iteration]) can equal it.
_STREAM = 0xC505


def strong_views(images: torch.Tensor, seed: int, iteration: int, rank: int = 0) -> torch.Tensor:
    """`images` (N, 1, X, Y, Z) scaled by a in CONTRAST and shifted by b in SHIFT per item, plus noise of
    NOISE_SIGMA; drawn from a generator on their device seeded by (seed, iteration, rank), so a resumed run
    draws what an uninterrupted one did and the ranks draw apart."""
    state = np.random.SeedSequence([seed, iteration, rank, _STREAM]).generate_state(1)[0]
    generator = torch.Generator(images.device).manual_seed(int(state))
    per_item = (images.shape[0],) + (1,) * (images.dim() - 1)
    draw = lambda low, high: torch.empty(per_item, device=images.device).uniform_(low, high, generator=generator)
    contrast, shift = draw(*CONTRAST), draw(*SHIFT)
    noise = torch.randn(images.shape, device=images.device, generator=generator) * NOISE_SIGMA
    return images * contrast + shift + noise
