"""Batch-norm statistics.

Precise statistics: the official VNet applies Dropout3d(0.5) before batch-normalised layers, so the running
statistics gathered during training describe dropped-out activations; in eval mode (no dropout) they can be far
off, above all early in training. Recomputing them with dropout off, over fresh training batches, fixes that
without touching any weight.

Statistics per group: the official DTC normalises the labeled crops with the statistics of a batch that is half
unlabeled crops; `GroupedForward` keeps the two groups apart."""
from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: Iterable[torch.Tensor], device: torch.device) -> None:
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training, momenta = model.training, [m.momentum for m in norms]
    model.eval()  # dropout off
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
        m.train()
    for image in images:
        model(image.to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


def recalibrated_copy(model: nn.Module, images: Iterable[torch.Tensor], device: torch.device) -> nn.Module:
    """A copy of `model` with recalibrated statistics, for validating mid-run without touching the model
    that goes on training (whose running statistics then stay those of an unvalidated run)."""
    clone = copy.deepcopy(model)
    recalibrate_batchnorm(clone, images, device)
    return clone


class GroupedForward(nn.Module):
    """`net` run once per group of the batch's items (the first `first` items, then the rest), the outputs
    joined again: in training mode each batch-norm layer then normalises a group with that group's own
    statistics, as if the other group were not in the batch (`dtc train --split-batchnorm`: the labeled crops
    as in supervised-only training, the unlabeled crops by themselves). One module call, so that
    DistributedDataParallel sees one forward per backward; the weights are `net`'s."""

    def __init__(self, net: nn.Module, first: int):
        super().__init__()
        self.net, self.first = net, first

    def forward(self, image: torch.Tensor):
        if image.shape[0] <= self.first:
            return self.net(image)
        parts = [self.net(group) for group in image.split([self.first, image.shape[0] - self.first])]
        return tuple(torch.cat(outputs) for outputs in zip(*parts))
