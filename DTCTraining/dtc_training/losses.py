"""The DTC objective (reference section 4): Dice + beta * level-set MSE on the labeled items, plus the
ramped dual-task consistency between sigmoid(-k * levelset) and sigmoid(seg) over all items. The official
code also computes the labeled items' cross-entropy but leaves it out of the total; `ce_weight` adds it
(a recipe switch, 0 by default). `cross_view` (not in the paper, 0 by default) adds a FixMatch-like term: the
two heads' agreement on an unlabeled crop is the pseudo-label of its intensity-perturbed strong view."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """V-Net soft Dice with squared denominators, summed over the whole batch (not a per-item mean)."""
    target = target.float()
    intersection = (prob * target).sum()
    return 1 - (2 * intersection + smooth) / ((prob * prob).sum() + (target * target).sum() + smooth)


def sigmoid_rampup(current: float, length: float) -> float:
    """exp(-5 (1 - x)^2) with x = current / length clipped to [0, 1]; 1 when there is no ramp."""
    if length == 0:
        return 1.0
    x = min(max(current, 0.0), length) / length
    return math.exp(-5.0 * (1.0 - x) ** 2)


def levelset_to_mask(levelset: torch.Tensor, k: float) -> torch.Tensor:
    """The task transform: sigmoid(-k z), a near-step from the level set to a soft mask. Kept in float32:
    with k = 1500 its gradient lives within |z| < 0.003 of the zero level, which bf16 cannot resolve."""
    return torch.sigmoid(-k * levelset.float())


def dual_task_pseudo_label(seg_logits: torch.Tensor, levelset: torch.Tensor,
                           k: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Detached pseudo-label of the unlabeled items from both heads: y = mean of their masks > 0.5, and the
    voxels where the heads agree (sigmoid(seg) and sigmoid(-k z) on the same side of 0.5), where y is trusted."""
    with torch.no_grad():
        seg_mask, levelset_mask = torch.sigmoid(seg_logits.float()), levelset_to_mask(levelset, k)
        label = ((seg_mask + levelset_mask) / 2 > 0.5).float()
        confident = (seg_mask > 0.5) == (levelset_mask > 0.5)
    return label, confident


def cross_view_loss(strong_logits: torch.Tensor, seg_logits: torch.Tensor, levelset: torch.Tensor,
                    k: float) -> torch.Tensor:
    """Binary cross-entropy of the strong views' seg logits against the weak views' dual-task pseudo-label,
    averaged over the confident voxels; 0 when there are none (masked, not indexed: no device sync)."""
    label, confident = dual_task_pseudo_label(seg_logits, levelset, k)
    bce = F.binary_cross_entropy_with_logits(strong_logits.float(), label, reduction="none")
    return torch.where(confident, bce, 0.0).sum() / confident.sum().clamp(min=1)


@dataclass(frozen=True)
class DTCLoss:
    k: float = 1500.0
    levelset_weight: float = 0.3  # beta
    consistency: float = 1.0  # lambda at the end of the ramp
    consistency_rampup: float = 40.0  # in ramp steps
    rampup_step: int = 150  # iterations per ramp step
    ce_weight: float = 0.0  # weight of the labeled items' binary cross-entropy (official: logged, not optimised)
    cross_view: float = 0.0  # W: final weight of the cross-view term, on the consistency's ramp (0: off)

    def ramp(self, iteration: int) -> float:
        """The ramp's shape in [0, 1] at the 0-based iteration t, constant over blocks of `rampup_step`."""
        return sigmoid_rampup(iteration // self.rampup_step, self.consistency_rampup)

    def consistency_weight(self, iteration: int) -> float:
        """w(t): lambda on the ramp."""
        return self.consistency * self.ramp(iteration)

    def cross_view_weight(self, iteration: int) -> float:
        """W on the consistency's ramp, so that the term ramps up even with --consistency 0."""
        return self.cross_view * self.ramp(iteration)

    def __call__(self, seg_logits, levelset, label, levelset_target, n_labeled: int, iteration: int,
                 strong_logits: torch.Tensor | None = None) -> dict:
        """Items [0, n_labeled) of the batch are labeled; `strong_logits` are the seg logits of the unlabeled
        items' strong views, in their order (used with `cross_view` only). Returns every term and the total."""
        prob = torch.sigmoid(seg_logits.float())
        loss_dice = dice_loss(prob[:n_labeled], label)
        loss_ce = F.binary_cross_entropy_with_logits(seg_logits[:n_labeled].float(), label.float())
        loss_levelset = F.mse_loss(levelset[:n_labeled].float(), levelset_target)
        loss_consistency = F.mse_loss(levelset_to_mask(levelset, self.k), prob)
        weight = self.consistency_weight(iteration)
        total = loss_dice + self.levelset_weight * loss_levelset + weight * loss_consistency
        if self.ce_weight:
            total = total + self.ce_weight * loss_ce
        cross_view = {}
        if self.cross_view:  # off, the terms stay those of the official loss
            cross_view = {"loss_cross_view": cross_view_loss(strong_logits, seg_logits[n_labeled:],
                                                             levelset[n_labeled:], self.k),
                          "cross_view_weight": self.cross_view_weight(iteration)}
            total = total + cross_view["cross_view_weight"] * cross_view["loss_cross_view"]
        return {
            "loss": total,
            "loss_dice": loss_dice,
            "loss_ce": loss_ce,
            "loss_levelset": loss_levelset,
            "loss_consistency": loss_consistency,
            "consistency_weight": weight,
            **cross_view,
        }
