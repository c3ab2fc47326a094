import itertools

import numpy as np
import pytest
import torch

from dtc_training import levelset as levelset_module
from dtc_training.levelset import compute_levelset, levelsets


def brute_force_levelset(mask: np.ndarray) -> np.ndarray:
    """The reference definition, written out voxel by voxel."""
    mask = mask.astype(bool)
    coords = np.argwhere(np.ones_like(mask))
    fg, bg = np.argwhere(mask), np.argwhere(~mask)
    inside = np.zeros(mask.shape)
    outside = np.zeros(mask.shape)
    for c in coords:
        c = tuple(c)
        if mask[c]:
            inside[c] = np.sqrt(((bg - c) ** 2).sum(1)).min()
        else:
            outside[c] = np.sqrt(((fg - c) ** 2).sum(1)).min()
    levelset = (outside - outside.min()) / (outside.max() - outside.min()) - \
        (inside - inside.min()) / (inside.max() - inside.min())
    for c in map(tuple, np.argwhere(mask)):
        neighbours = [tuple(np.add(c, d)) for d in [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]]
        inside_patch = [n for n in neighbours if all(0 <= n[i] < mask.shape[i] for i in range(3))]
        if any(not mask[n] for n in inside_patch):
            levelset[c] = 0
    return levelset


def shapes():
    box = np.zeros((9, 8, 7), bool)
    box[2:6, 3:7, 1:5] = True
    ball = np.linalg.norm(np.argwhere(np.ones((10, 10, 10))) - 4.5, axis=1).reshape(10, 10, 10) < 3.2
    touching_border = np.zeros((8, 8, 8), bool)
    touching_border[0:4, 2:6, 3:8] = True
    return {"box": box, "ball": ball, "touching border": touching_border}


@pytest.mark.parametrize("name", list(shapes()))
def test_matches_brute_force_definition(name):
    mask = shapes()[name]
    np.testing.assert_allclose(compute_levelset(mask), brute_force_levelset(mask), atol=1e-6)


def test_empty_and_full_masks_give_zeros():
    # the official code gives zeros for an empty patch and NaN for an all-foreground one: no boundary in either
    assert not compute_levelset(np.zeros((6, 6, 6))).any()
    assert not compute_levelset(np.ones((6, 6, 6))).any()


def random_masks(seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    masks = rng.random((4, 11, 7, 9)) < [[[[0.02]]], [[[0.5]]], [[[0.0]]], [[[1.0]]]]  # sparse, dense, empty, full
    return torch.from_numpy(masks)


@pytest.mark.parametrize("chunk_elements", [1 << 26, 100])  # one chunk; many (a line or two per chunk)
def test_gpu_distance_transform_equals_scipys(monkeypatch, chunk_elements):
    # The separable torch transform that runs on a GPU, run here on the CPU, against scipy's.
    monkeypatch.setattr(levelset_module, "_CHUNK_ELEMENTS", chunk_elements)
    for seed in range(3):
        features = random_masks(seed)
        torch_distances = levelset_module._torch_distances(features)
        # The squared distances are exact integers; torch's vectorised sqrt may differ from libm's in the last
        # bit (it did on the H200 image's torch 2.11: 1.414213562373095 against 1.4142135623730951).
        np.testing.assert_allclose(torch_distances.numpy(), levelset_module._scipy_distances(features).numpy(),
                                   rtol=1e-15, atol=0)
        assert torch_distances[0].max() > 1  # the sparse item has distances of several voxels


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_level_sets_on_a_gpu_equal_the_cpu_ones():
    masks = torch.cat([random_masks(seed) for seed in range(3)])
    np.testing.assert_allclose(levelsets(masks.cuda()).cpu().numpy(), levelsets(masks).numpy(), rtol=0, atol=1e-6)


def test_batched_level_sets_equal_per_item_ones():
    masks = random_masks(7)
    batch = levelsets(masks)
    assert batch.dtype == torch.float32 and batch.shape == masks.shape
    for item, mask in zip(batch, masks):
        np.testing.assert_array_equal(item.numpy(), compute_levelset(mask.numpy()))


def test_properties_on_real_la_crops(la_root, monkeypatch):
    from dtc_training import la

    rng = np.random.default_rng(0)
    crops, expected = [], []
    for case_id in la.read_case_list(la_root)[:3]:
        _, label = la.read_case(la_root, case_id)
        x, y = (rng.integers(0, s - p) for s, p in zip(label.shape[:2], (112, 112)))
        crop = label[x:x + 112, y:y + 112, 4:84]
        levelset = compute_levelset(crop)
        inside = crop.astype(bool)
        assert levelset.min() == pytest.approx(-1) and levelset.max() == pytest.approx(1)
        assert (levelset[~inside] > 0).all()
        boundary = levelset[inside] == 0
        assert 0 < boundary.mean() < 0.5  # the inner shell only
        assert (levelset[inside][~boundary] < 0).all()
        crops.append(crop)
        expected.append(levelset)
    # the same crops as a GPU computes their level sets, on the CPU
    monkeypatch.setattr(levelset_module, "_scipy_distances", levelset_module._torch_distances)
    on_gpu_path = levelsets(torch.from_numpy(np.stack(crops))).numpy()
    np.testing.assert_allclose(on_gpu_path, np.stack(expected), rtol=0, atol=1e-7)
