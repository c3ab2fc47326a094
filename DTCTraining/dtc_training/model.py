"""The dual-task VNet of DTC: the official 16-filter batch-norm VNet with a segmentation head and a
level-set head (tanh). Matches the official network layer for layer, so official state dicts load as is."""
from __future__ import annotations

import torch
from torch import nn


class ConvStage(nn.Module):
    """`n_convs` x (Conv3d 3x3x3 -> BatchNorm -> ReLU)."""

    def __init__(self, n_convs: int, in_channels: int, out_channels: int):
        layers = []
        for i in range(n_convs):
            layers += [
                nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
                nn.BatchNorm3d(out_channels),
                nn.ReLU(inplace=True),
            ]
        super().__init__()
        self.conv = nn.Sequential(*layers)  # attribute name gives the official state-dict keys

    def forward(self, x):
        return self.conv(x)


class Resample(nn.Module):
    """Stride-2 (transposed) convolution -> BatchNorm -> ReLU: one VNet down- or up-sampling step."""

    def __init__(self, in_channels: int, out_channels: int, up: bool):
        super().__init__()
        conv = nn.ConvTranspose3d if up else nn.Conv3d
        self.conv = nn.Sequential(
            conv(in_channels, out_channels, 2, stride=2), nn.BatchNorm3d(out_channels), nn.ReLU(inplace=True)
        )

    def forward(self, x):
        return self.conv(x)


class DualTaskVNet(nn.Module):
    """`forward(x)` returns `(seg_logits, levelset)`, each with one channel; the level set is in (-1, 1),
    negative inside the structure. Dropout3d(0.5) at the bottleneck and before the heads, as the official
    training network has (inactive in eval mode)."""

    def __init__(self, in_channels: int = 1, n_filters: int = 16, has_dropout: bool = True):
        super().__init__()
        f = n_filters
        self.block_one = ConvStage(1, in_channels, f)
        self.block_one_dw = Resample(f, 2 * f, up=False)
        self.block_two = ConvStage(2, 2 * f, 2 * f)
        self.block_two_dw = Resample(2 * f, 4 * f, up=False)
        self.block_three = ConvStage(3, 4 * f, 4 * f)
        self.block_three_dw = Resample(4 * f, 8 * f, up=False)
        self.block_four = ConvStage(3, 8 * f, 8 * f)
        self.block_four_dw = Resample(8 * f, 16 * f, up=False)
        self.block_five = ConvStage(3, 16 * f, 16 * f)
        self.block_five_up = Resample(16 * f, 8 * f, up=True)
        self.block_six = ConvStage(3, 8 * f, 8 * f)
        self.block_six_up = Resample(8 * f, 4 * f, up=True)
        self.block_seven = ConvStage(3, 4 * f, 4 * f)
        self.block_seven_up = Resample(4 * f, 2 * f, up=True)
        self.block_eight = ConvStage(2, 2 * f, 2 * f)
        self.block_eight_up = Resample(2 * f, f, up=True)
        self.block_nine = ConvStage(1, f, f)
        self.out_conv = nn.Conv3d(f, 1, 1)  # level-set head (official name)
        self.out_conv2 = nn.Conv3d(f, 1, 1)  # segmentation head (official name)
        self.tanh = nn.Tanh()
        self.dropout = nn.Dropout3d(p=0.5) if has_dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1 = self.block_one(x)
        x2 = self.block_two(self.block_one_dw(x1))
        x3 = self.block_three(self.block_two_dw(x2))
        x4 = self.block_four(self.block_three_dw(x3))
        x5 = self.dropout(self.block_five(self.block_four_dw(x4)))
        x = self.block_six(self.block_five_up(x5) + x4)
        x = self.block_seven(self.block_six_up(x) + x3)
        x = self.block_eight(self.block_seven_up(x) + x2)
        x = self.dropout(self.block_nine(self.block_eight_up(x) + x1))
        return self.out_conv2(x), self.tanh(self.out_conv(x))
