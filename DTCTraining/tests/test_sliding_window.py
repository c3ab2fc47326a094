"""The official window grid, the fast mode's equality with a whole-volume pass and its Gaussian blending, BN
folding, window planning and the out-of-memory fallback."""
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dtc_training.model import DualTaskVNet
from dtc_training.sliding_window import (
    CPU_WINDOW_BATCH, FAST_OVERLAP, GAUSSIAN_SIGMA, FoldedVNet, OFFICIAL_STRIDES, fast_plan, max_window_voxels, predict_fast,
    predict_official, window_sides,
)

CPU = torch.device("cpu")


def random_net(n_filters=4, seed=0) -> DualTaskVNet:
    """Eval-mode net with non-trivial BatchNorm statistics, so folding has something to fold."""
    torch.manual_seed(seed)
    net = DualTaskVNet(n_filters=n_filters).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net


class WindowMean(nn.Module):
    """Stand-in network whose segmentation logit is the mean of the window it sees, so each window's
    contribution identifies the window."""

    def forward(self, x):
        return x.mean(dim=(1, 2, 3, 4), keepdim=True).expand_as(x), torch.zeros_like(x)


def official_reference(array, patch, strides=OFFICIAL_STRIDES):
    """The official test loop (reference section 7), written out: symmetric zero padding to the patch,
    ceil((dim - patch) / stride) + 1 windows per axis, starts clamped to the end, plain averaging."""
    pads = [max(p - s, 0) for s, p in zip(array.shape, patch)]
    padded = np.pad(array, [(d // 2, d - d // 2) for d in pads])
    total, count = np.zeros(padded.shape), np.zeros(padded.shape)
    starts = [[min(st * i, n - p) for i in range(math.ceil((n - p) / st) + 1)]
              for n, p, st in zip(padded.shape, patch, strides)]
    for x in starts[0]:
        for y in starts[1]:
            for z in starts[2]:
                window = (slice(x, x + patch[0]), slice(y, y + patch[1]), slice(z, z + patch[2]))
                total[window] += 1 / (1 + np.exp(-padded[window].astype(np.float64).mean()))
                count[window] += 1
    crop = tuple(slice(d // 2, d // 2 + s) for d, s in zip(pads, array.shape))
    return (total / count)[crop], math.prod(map(len, starts))


@pytest.mark.parametrize("shape, patch", [((190, 142, 88), (112, 112, 80)),  # an LA-sized case
                                          ((100, 130, 70), (112, 112, 80)),  # smaller than the patch in x, z
                                          ((61, 47, 29), (32, 32, 16))])
def test_official_mode_reproduces_the_official_window_grid(shape, patch):
    array = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    prob, info = predict_official(WindowMean(), array, patch, CPU)
    expected, windows = official_reference(array, patch)
    assert info["windows"] == windows
    np.testing.assert_allclose(prob, expected, atol=1e-5)


def test_folded_network_equals_the_eval_network():
    net = random_net()
    x = torch.randn(1, 1, 48, 32, 32)
    with torch.inference_mode():
        expected = torch.sigmoid(net(x)[0])
        np.testing.assert_allclose(FoldedVNet(net)(x).numpy(), expected.numpy(), atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in FoldedVNet(net).modules())


@pytest.mark.parametrize("shape", [(40, 37, 21), (64, 48, 32), (20, 10, 9)])
def test_fast_mode_is_one_whole_volume_pass_when_it_fits(shape):
    net, patch = random_net(), (32, 32, 16)
    array = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    prob, info = predict_fast(FoldedVNet(net), array, patch, CPU, n_filters=4)
    assert info["windows"] == 1
    # The whole pass: zero padding, centred, up to multiples of 16 and at least the patch.
    size = [max(-(-s // 16) * 16, p) for s, p in zip(shape, patch)]
    pads = [n - s for n, s in zip(size, shape)]
    x = F.pad(torch.from_numpy(array)[None, None], [a for d in reversed(pads) for a in (d // 2, d - d // 2)])
    with torch.inference_mode():
        whole = torch.sigmoid(net(x)[0])[0, 0].numpy()
    crop = tuple(slice(d // 2, d // 2 + s) for d, s in zip(pads, shape))
    np.testing.assert_allclose(prob, whole[crop], atol=1e-5)


class WindowMeanProbability(nn.Module):
    """Stand-in for FoldedVNet (which returns probabilities): each window's output is its mean."""

    def forward(self, x):
        return x.mean(dim=(1, 2, 3, 4), keepdim=True) * torch.ones_like(x)


def test_fast_mode_blends_overlapping_windows_with_the_configured_gaussian():
    # Two windows along x, at 0-31 and 16-47: the first sees zeros (mean 0), the second half ones (mean 0.5).
    # Where they overlap, the output is the second window's share of the Gaussian weights times 0.5.
    array = np.zeros((48, 16, 16), np.float32)
    array[32:] = 1
    prob, info = predict_fast(WindowMeanProbability(), array, (32, 16, 16), CPU, n_filters=1, max_sides=(32, 16, 16))
    assert info["windows"] == 2
    x = np.arange(16, 32)

    def blended(sigma):
        first, second = (np.exp(-0.5 * ((x - centre) / (sigma * 32)) ** 2) for centre in (15.5, 31.5))
        return 0.5 * second / (first + second)

    np.testing.assert_allclose(prob[16:32, 8, 8], blended(GAUSSIAN_SIGMA), atol=0.02)
    assert np.abs(prob[16:32, 8, 8] - blended(0.125)).max() > 0.05  # MONAI's default sigma would be told apart


def test_fast_plan_windows_fit_the_budget_and_overlap():
    budget = 2_000_000
    plan = fast_plan((190, 142, 88), (112, 112, 80), budget)
    assert math.prod(plan.roi) <= budget and plan.windows > 1 and plan.blend == "gaussian"
    assert all(r % 16 == 0 and r >= p for r, p in zip(plan.roi, (112, 112, 80)))
    for size, roi, overlap in zip((190, 142, 88), plan.roi, plan.overlap):
        if size > roi:
            assert roi - int(roi * (1 - overlap)) >= FAST_OVERLAP


def test_patch_window_size_keeps_the_training_patch_whatever_the_budget():
    patch = (112, 112, 80)
    assert window_sides(patch, "volume") is None
    for shape, per_axis in (((190, 142, 88), (2, 2, 2)), ((576, 576, 88), (6, 6, 2)), ((60, 50, 40), (1, 1, 1))):
        plan = fast_plan(shape, patch, max_voxels=10**9, max_sides=window_sides(patch, "patch"))
        assert plan.roi == patch and plan.windows == math.prod(per_axis)
        assert plan.batch == plan.windows  # a large budget batches every window at once
    assert fast_plan((190, 142, 88), patch, max_voxels=10**9).windows == 1  # what "volume" would do


def test_clinical_field_of_view_is_windowed_under_the_default_cpu_budget():
    budget = max_window_voxels(CPU, 16, None)
    plan = fast_plan((576, 576, 88), (112, 112, 80), budget)
    assert plan.windows > 1 and math.prod(plan.roi) <= budget
    assert math.prod(plan.roi) * plan.windows < 1.25 * 576 * 576 * 96  # few windows, little overlap


def test_fp16_halves_the_activations_on_cuda_also_under_an_explicit_budget():
    # An explicit --memory-gb reads no device memory, so this runs without a GPU.
    for gb in (1.0, 6.0):
        assert max_window_voxels(torch.device("cuda"), 16, gb) == 2 * max_window_voxels(CPU, 16, gb)
        assert max_window_voxels(torch.device("cuda"), 16, gb, fp16=False) == max_window_voxels(CPU, 16, gb)


class RecordsBatches(nn.Module):
    """Passes windows through, noting how many each forward pass received."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.batches = inner, []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.inner(x)


def test_cpu_runs_fast_windows_a_few_at_a_time_however_many_the_budget_holds():
    patch = (32, 32, 16)
    array = np.random.default_rng(4).normal(size=(64, 60, 30)).astype(np.float32)
    recorder = RecordsBatches(FoldedVNet(random_net()))
    prob, info = predict_fast(recorder, array, patch, CPU, n_filters=4, memory_gb=100,
                              max_sides=window_sides(patch, "patch"))
    assert info["windows"] > CPU_WINDOW_BATCH  # a 100 GB budget would hold them all in one batch
    assert info["window_batch"] == max(recorder.batches) == CPU_WINDOW_BATCH
    assert sum(recorder.batches) == info["windows"]


class RunsOutOfMemory(nn.Module):
    """Raises an out-of-memory error for windows (or window batches) above `limit` voxels."""

    def __init__(self, inner, limit):
        super().__init__()
        self.inner, self.limit, self.refused = inner, limit, 0

    def forward(self, x):
        if x.numel() > self.limit:
            self.refused += 1
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
        return self.inner(x)


def test_out_of_memory_retries_with_smaller_windows(caplog):
    net, patch = random_net(), (32, 32, 16)
    array = np.random.default_rng(3).normal(size=(64, 60, 30)).astype(np.float32)
    limiter = RunsOutOfMemory(FoldedVNet(net), limit=48 * 48 * 32)
    with caplog.at_level(logging.WARNING):
        prob, info = predict_fast(limiter, array, patch, CPU, n_filters=4)
    assert limiter.refused >= 1 and info["windows"] > 1
    assert "out of memory" in caplog.text
    # the result is what those smaller windows give when memory suffices
    direct, direct_info = predict_fast(FoldedVNet(net), array, patch, CPU, n_filters=4, max_sides=info["window"])
    assert direct_info["window"] == info["window"] and direct_info["windows"] == info["windows"]
    np.testing.assert_allclose(prob, direct, atol=1e-5)


def test_out_of_memory_with_the_smallest_window_is_a_clear_error():
    limiter = RunsOutOfMemory(FoldedVNet(random_net()), limit=10)
    with pytest.raises(ValueError, match="not enough memory"):
        predict_fast(limiter, np.zeros((40, 40, 20), np.float32), (32, 32, 16), CPU, n_filters=4)
