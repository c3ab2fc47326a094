"""Validation Dice during training scores what `dtc infer` would segment by default."""
import numpy as np
import torch

from dtc_training.metrics import dice
from dtc_training.model import DualTaskVNet
from dtc_training.sliding_window import FoldedVNet, predict_fast, window_sides
from dtc_training.validation import validation_dice

CPU = torch.device("cpu")


def test_validation_dice_uses_the_default_patch_windows():
    torch.manual_seed(0)
    net, patch = DualTaskVNet(n_filters=4).eval(), (32, 32, 16)
    rng = np.random.default_rng(0)
    image = rng.normal(size=(64, 60, 30)).astype(np.float32)
    label = rng.random((64, 60, 30)) < 0.5
    folded = FoldedVNet(net)
    patch_windows = dice(predict_fast(folded, image, patch, CPU, 4, max_sides=window_sides(patch, "patch"))[0] > 0.5, label)
    whole_volume = dice(predict_fast(folded, image, patch, CPU, 4)[0] > 0.5, label)
    assert patch_windows != whole_volume  # the two window policies score this net differently
    got = validation_dice(net, [{"image": image, "label": label.astype(np.uint8)}], patch, CPU, 4)
    assert got == patch_windows
