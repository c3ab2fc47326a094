"""Sliding-window inference of the dual-task VNet on MONAI's `sliding_window_inference`, in two modes:

- `official`: the window grid of the official DTC test code (reference section 7): 112x112x80 windows
  at strides 18/18/4, the last window clamped to the end, zero padding up to the patch, plain averaging
  of sigmoid(seg). The unmodified network in fp32, one window at a time: the parity reference.
- `fast` (default): windows of the training patch (`window_size="patch"`, the default) or the fewest,
  largest windows that fit a memory budget (`"volume"`: a whole-volume pass when it fits), batched
  (two at a time on the CPU, as many as fit on CUDA), Gaussian blending where windows overlap, a
  BN-folded channels-last copy of the network with a forward that frees skip tensors early, fp16
  autocast on CUDA (unless asked for fp32), and out-of-memory fallback.

Arrays are (x, y, z) float32; results are sigmoid probabilities of the segmentation head, or, asked for the
heads' doubt (`doubt_k`), the channels of `doubt.CHANNELS` (3, x, y, z) from the same forward passes."""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from itertools import product
from typing import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .doubt import doubt_channels
from .errors import InputError
from .model import DualTaskVNet

log = logging.getLogger(__name__)

MODES = ("fast", "official")
# Fast-mode window sizes. "patch": the training patch (rounded up to 16). The network learned from crops
# of that size; larger windows, even by one 16-voxel step, lose Dice on a full-protocol model
# (docs/benchmarks.md, "Window size"). "volume": as large as memory allows, one pass when it fits: the
# fastest.
WINDOW_SIZES = ("patch", "volume")
OFFICIAL_STRIDES = (18, 18, 4)
DIVISOR = 16  # four stride-2 levels: every window side must be a multiple of 16
FAST_OVERLAP = 16  # least overlap of neighbouring fast windows, blended with Gaussian weights (32 gave the
# same Dice with a third more windows: docs/benchmarks.md, "Window size")
# Gaussian blending's sigma, as a fraction of the window side. MONAI's default, 0.125, weighs a window's
# outer quarter at under 14% of its centre; 0.25 agreed better with `official` on all 16 held-out cases and
# scored better on 14 (docs/benchmarks.md, "Blending and grid shifts").
GAUSSIAN_SIGMA = 0.25
# Peak activation memory of the folded fp32 forward, bytes per voxel per filter (measured: ~217 B/voxel
# at 16 filters on CPU; the margin covers allocator slack).
BYTES_PER_VOXEL_PER_FILTER = 16
DEFAULT_CPU_MEMORY_GB = 2.5
# Windows per forward pass on the CPU. Beyond two, batching only adds memory: 8 windows of 112x112x80 (an
# LA case's count) took 4.45 s one at a time, 3.70-3.74 s two, 3.80-3.96 s four and 4.30-5.30 s all eight
# at once (2 threads; with 1 thread 8.9 s one and 7.5 s two at a time). docs/benchmarks.md, "Inference speed".
CPU_WINDOW_BATCH = 2


class FoldedVNet(nn.Module):
    """Inference copy of a DualTaskVNet: BatchNorm folded into the preceding (transposed) convolution,
    channels-last weights, skip tensors released as soon as they are added. Returns sigmoid(seg), the
    level-set head skipped (`heads` returns both; `BothHeads` is a network that does). Equal to the
    eval-mode network up to float rounding."""

    def __init__(self, net: DualTaskVNet):
        super().__init__()
        self.net = copy.deepcopy(net).eval()
        for stage in self.net.modules():
            if isinstance(stage, nn.Sequential):
                _fold_sequential(stage)
        self.net.to(memory_format=torch.channels_last_3d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net.out_conv2(self.features(x))).contiguous()

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigmoid(seg), tanh(levelset)) from one pass (the level set in any memory layout: a `contiguous`
        would be quantized in the int8 copy, see `quantization.quantized_copy`)."""
        x = self.features(x)
        return torch.sigmoid(self.net.out_conv2(x)).contiguous(), torch.tanh(self.net.out_conv(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output, which both heads read."""
        n = self.net
        x1 = n.block_one(x.contiguous(memory_format=torch.channels_last_3d))
        x2 = n.block_two(n.block_one_dw(x1))
        x3 = n.block_three(n.block_two_dw(x2))
        x4 = n.block_four(n.block_three_dw(x3))
        x = n.block_five(n.block_four_dw(x4))
        skips = [x4, x3, x2, x1]
        del x1, x2, x3, x4  # the list holds the only references, so each skip is freed once added
        for up, stage in ((n.block_five_up, n.block_six), (n.block_six_up, n.block_seven),
                          (n.block_seven_up, n.block_eight), (n.block_eight_up, n.block_nine)):
            x = up(x)
            x += skips.pop(0)
            x = stage(x)
        return x


class BothHeads(nn.Module):
    """A FoldedVNet (its weights shared, not copied) that returns (sigmoid(seg), tanh(levelset)): the network
    fast mode runs when the heads' doubt is asked for, and what its int8 copy is traced from."""

    def __init__(self, folded: FoldedVNet):
        super().__init__()
        self.folded = folded

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.folded.heads(x)


def _fold_sequential(seq: nn.Sequential) -> None:
    layers, folded = list(seq), []
    while layers:
        layer = layers.pop(0)
        if layers and isinstance(layers[0], nn.BatchNorm3d):
            layer = fuse_conv_bn_eval(layer, layers.pop(0), transpose=isinstance(layer, nn.ConvTranspose3d))
        folded.append(layer)
    seq._modules.clear()
    for i, layer in enumerate(folded):
        seq.add_module(str(i), layer)


@dataclass
class WindowPlan:
    roi: tuple[int, int, int]
    overlap: tuple[float, float, float]  # MONAI's fraction, chosen so that int(roi*(1-overlap)) == interval
    windows: int
    blend: str  # "constant" or "gaussian"
    batch: int


def _overlap_for_interval(roi: int, interval: int) -> float:
    # Half a voxel of slack: MONAI floors roi*(1-overlap), and 1-18/112 would floor to 17 in floating point.
    return (roi - interval - 0.5) / roi if interval < roi else 0.0


def _windows_along(size: int, roi: int, interval: int) -> int:
    return 1 if size <= roi else math.ceil((size - roi) / interval) + 1


def official_plan(shape: Sequence[int], patch: Sequence[int]) -> WindowPlan:
    intervals = [min(s, p) for s, p in zip(OFFICIAL_STRIDES, patch)]
    overlap = tuple(_overlap_for_interval(p, i) for p, i in zip(patch, intervals))
    windows = math.prod(_windows_along(n, p, i) for n, p, i in zip(shape, patch, intervals))
    return WindowPlan(tuple(patch), overlap, windows, "constant", 1)


def fast_plan(shape: Sequence[int], patch: Sequence[int], max_voxels: int,
              max_sides: Sequence[int] | None = None) -> WindowPlan:
    """Fewest computed voxels with windows of at most `max_voxels` and sides of at most `max_sides`
    (None: up to the whole volume). Window sides are multiples of 16, at least the patch; neighbouring
    windows overlap by at least FAST_OVERLAP voxels (at most half a window)."""
    shape = [max(int(s), int(p)) for s, p in zip(shape, patch)]
    max_sides = max_sides or [_round_up(s) for s in shape]
    per_axis = []  # (side, windows along the axis) candidates
    for size, p, cap in zip(shape, patch, max_sides):
        sides = range(_round_up(p), min(_round_up(size), cap) + 1, DIVISOR)
        per_axis.append([(r, _windows_along(size, r, r - min(FAST_OVERLAP, r // 2))) for r in sides])
    best = None
    for choice in product(*per_axis):
        roi, counts = [r for r, _ in choice], [n for _, n in choice]
        size = math.prod(roi)
        # Among windows that fit, the fewest computed voxels; if none fits, the smallest window.
        key = (0, math.prod(n * r for n, r in choice), math.prod(counts)) if size <= max_voxels else (1, size, 0)
        if best is None or key < best[0]:
            best = (key, roi, counts)
    _, roi, counts = best
    intervals = [r if n == 1 else math.ceil((s - r) / (n - 1)) for s, r, n in zip(shape, roi, counts)]
    overlap = tuple(_overlap_for_interval(r, i) for r, i in zip(roi, intervals))
    windows = math.prod(_windows_along(s, r, i) for s, r, i in zip(shape, roi, intervals))  # MONAI's count
    batch = max(1, min(windows, max_voxels // math.prod(roi)))
    return WindowPlan(tuple(roi), overlap, windows, "gaussian" if windows > 1 else "constant", batch)


def _round_up(n: int) -> int:
    return -(-n // DIVISOR) * DIVISOR


def window_sides(patch: Sequence[int], window_size: str) -> tuple[int, ...] | None:
    """The largest window sides of a fast-mode window policy (None: no limit but memory)."""
    return None if window_size == "volume" else tuple(_round_up(p) for p in patch)


def max_window_voxels(device: torch.device, n_filters: int, memory_gb: float | None, fp16: bool = True) -> int:
    """Largest window (voxels) whose activations fit `memory_gb` (default: 2.5 GB on CPU, 80% of the
    free memory on CUDA, where fp16 halves the activations whatever the budget)."""
    per_voxel = BYTES_PER_VOXEL_PER_FILTER * n_filters
    if device.type == "cuda" and fp16:
        per_voxel //= 2
    if memory_gb is None:
        memory_gb = 0.8 * torch.cuda.mem_get_info(device)[0] / 1e9 if device.type == "cuda" else DEFAULT_CPU_MEMORY_GB
    return max(int(memory_gb * 1e9 / per_voxel), 1)


def _is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def _run(predictor, array: np.ndarray, plan: WindowPlan, device: torch.device, amp: bool,
         doubt_k: float | None = None) -> np.ndarray:
    """(x, y, z) probabilities; with `doubt_k` the predictor returns (sigmoid(seg), tanh(levelset)), and
    the result is the (3, x, y, z) channels of `doubt.CHANNELS`, each blended as the probabilities are."""
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]

    def predict(window: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            out = predictor(window)
        return out.float() if doubt_k is None else doubt_channels(*out, doubt_k)

    with torch.inference_mode():
        out = sliding_window_inference(
            x, plan.roi, plan.batch, predict, overlap=plan.overlap, mode=plan.blend, sigma_scale=GAUSSIAN_SIGMA,
            padding_mode="constant", cval=0.0, sw_device=device, device="cpu",
        )
    return (out[0, 0] if doubt_k is None else out[0]).numpy()


def predict_official(net: DualTaskVNet, array: np.ndarray, patch: Sequence[int], device: torch.device,
                     doubt_k: float | None = None) -> tuple[np.ndarray, dict]:
    """Official-mode probabilities; with `doubt_k` the channels of `doubt.CHANNELS` (the network computes
    both heads anyway)."""
    plan = official_plan(array.shape, patch)

    def predictor(window):
        seg, levelset = net(window)
        return torch.sigmoid(seg) if doubt_k is None else (torch.sigmoid(seg), levelset)

    prob = _run(predictor, array, plan, device, amp=False, doubt_k=doubt_k)
    return prob, {"mode": "official", "device": str(device), "windows": plan.windows, "window": list(plan.roi)}


def predict_fast(network: nn.Module, array: np.ndarray, patch: Sequence[int], device: torch.device,
                 n_filters: int, memory_gb: float | None = None,
                 max_sides: Sequence[int] | None = None, fp16: bool = True,
                 doubt_k: float | None = None) -> tuple[np.ndarray, dict]:
    """Fast-mode probabilities of `network`, a FoldedVNet or its int8 copy, with fp16 autocast on CUDA
    unless `fp16` is False (the CPU computes in the network's own arithmetic). With `doubt_k`, `network`
    returns both heads (`BothHeads` or its int8 copy) and the result is the channels of `doubt.CHANNELS`
    from the same passes. Windows run CPU_WINDOW_BATCH
    at a time on the CPU, as many as the memory budget holds on CUDA. On out-of-memory: halve the window
    batch, then the window size, then (on CUDA) move to the CPU; each step is logged."""
    max_voxels = max_window_voxels(device, n_filters, memory_gb, fp16)
    batch_cap = CPU_WINDOW_BATCH if device.type == "cpu" else None
    min_voxels = math.prod(_round_up(p) for p in patch)
    while True:
        plan = fast_plan(array.shape, patch, max_voxels, max_sides)
        if batch_cap is not None:
            plan.batch = min(plan.batch, batch_cap)
        try:
            network.to(device)
            prob = _run(network, array, plan, device, amp=fp16 and device.type == "cuda", doubt_k=doubt_k)
            info = {"mode": "fast", "device": str(device), "windows": plan.windows, "window": list(plan.roi),
                    "window_batch": plan.batch}
            return prob, info
        except RuntimeError as error:
            if not _is_out_of_memory(error):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if plan.batch > 1:
                batch_cap = plan.batch // 2
                log.warning("out of memory on %s: retrying with %d windows per batch", device, batch_cap)
            elif math.prod(plan.roi) > min_voxels:
                max_voxels = max(min_voxels, math.prod(plan.roi) // 2)
                log.warning("out of memory on %s: retrying with smaller windows (<= %d voxels)", device, max_voxels)
            elif device.type != "cpu":
                device, max_voxels = torch.device("cpu"), max_window_voxels(torch.device("cpu"), n_filters, memory_gb)
                batch_cap = CPU_WINDOW_BATCH
                log.warning("out of memory on the GPU even with single %s windows: falling back to the CPU", plan.roi)
            else:
                raise InputError(f"not enough memory to segment a {array.shape} volume even with "
                                 f"{plan.roi} windows") from None
