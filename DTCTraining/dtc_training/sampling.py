"""Which cases feed which iteration. Batch t is a pure function of (seed, t, rank): labeled and
unlabeled cases each come from a fresh permutation every epoch (no case repeats within an epoch, also
across ranks), and the augmentation of every item is seeded by its global sample position. Resuming at iteration t,
with any number of DataLoader workers or ranks, therefore sees exactly the batches an uninterrupted run
would have seen."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import Dataset

from .levelset import levelsets
from .transforms import training_augmentation, with_volume_levelset

LABELED, UNLABELED = 0, 1


@lru_cache(maxsize=64)
def _permutation(n: int, seed: int, stream: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, stream, epoch]).permutation(n)


def draw_cases(n: int, slots: range, seed: int, stream: int) -> list[int]:
    """Case indices for global sample positions `slots` of a stream over `n` cases."""
    return [int(_permutation(n, seed, stream, pos // n)[pos % n]) for pos in slots]


class IterationBatches(Dataset):
    """Item t is the batch of iteration t for this rank: `image` (L+U, 1, *patch), `label` and
    `levelset` (L, 1, *patch), the labeled items first. With `patch_levelsets=False` the crops' level sets
    are left to the training step (`levelset` is then absent, unless the target is the whole volume's);
    `levelset_boundary` places the targets' zero level (`levelset.BOUNDARIES`)."""

    def __init__(self, labeled: list[dict], unlabeled: list[dict], labeled_batch: int, unlabeled_batch: int,
                 patch_size, seed: int, iterations: int, rank: int = 0, world_size: int = 1,
                 intensity_augmentation: bool = False, levelset_target: str = "patch",
                 spatial_augmentation: bool = False, low_contrast_augmentation: bool = False,
                 patch_levelsets: bool = True, levelset_boundary: str = "official"):
        volume_levelset = levelset_target == "volume"
        if volume_levelset:
            labeled = [with_volume_levelset(case, patch_size, levelset_boundary) for case in labeled]
        self.labeled, self.unlabeled = labeled, unlabeled
        self.labeled_batch, self.unlabeled_batch = labeled_batch, unlabeled_batch
        self.seed, self.iterations, self.rank, self.world_size = seed, iterations, rank, world_size
        switches = dict(intensity=intensity_augmentation, spatial=spatial_augmentation,
                        low_contrast=low_contrast_augmentation)
        self.augment_labeled = training_augmentation(patch_size, True, volume_levelset=volume_levelset,
                                                     patch_levelset=patch_levelsets,
                                                     levelset_boundary=levelset_boundary, **switches)
        self.augment_unlabeled = training_augmentation(patch_size, False, **switches)

    def __len__(self) -> int:
        return self.iterations

    def _slots(self, iteration: int, per_rank: int) -> range:
        start = (iteration * self.world_size + self.rank) * per_rank
        return range(start, start + per_rank)

    def _augment(self, transform, case: dict, stream: int, position: int) -> dict:
        # Seeded by the global sample position: the same items whatever the number of ranks or workers.
        transform.set_random_state(seed=int(np.random.SeedSequence([self.seed, stream, position]).generate_state(1)[0]))
        return transform({k: v[None] for k, v in case.items() if k in ("image", "label", "levelset")})

    def __getitem__(self, iteration: int) -> dict:
        items = []
        lab_slots = self._slots(iteration, self.labeled_batch)
        for position, i in zip(lab_slots, draw_cases(len(self.labeled), lab_slots, self.seed, LABELED)):
            items.append(self._augment(self.augment_labeled, self.labeled[i], LABELED, position))
        if self.unlabeled_batch and self.unlabeled:
            unl_slots = self._slots(iteration, self.unlabeled_batch)
            for position, i in zip(unl_slots, draw_cases(len(self.unlabeled), unl_slots, self.seed, UNLABELED)):
                items.append(self._augment(self.augment_unlabeled, self.unlabeled[i], UNLABELED, position))
        stack = lambda key, part: torch.as_tensor(np.stack([np.asarray(d[key]) for d in part])).float()
        n_lab = self.labeled_batch
        batch = {"iteration": iteration, "image": stack("image", items), "label": stack("label", items[:n_lab])}
        if "levelset" in items[0]:
            batch["levelset"] = stack("levelset", items[:n_lab])
        return batch


def batch_levelsets(batch: dict, label: torch.Tensor, boundary: str = "official") -> torch.Tensor:
    """The labeled items' level sets of a batch: as the DataLoader workers computed them, or computed from
    `label` (the batch's labels, moved to the training device) on its device, with the zero level at
    `boundary` (the same as the workers')."""
    if "levelset" in batch:
        return batch["levelset"].to(label.device, non_blocking=True)
    return levelsets(label[:, 0], boundary)[:, None]
