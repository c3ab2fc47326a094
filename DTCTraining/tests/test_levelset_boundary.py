"""The half-voxel level-set boundary (`--levelset-boundary half-voxel`): {z < 0} is the mask exactly, on both
distance-transform paths and wherever a target is computed; the official boundary stays the default."""
import json

import numpy as np
import pytest
import torch

from conftest import TINY, events, run_dtc
from dtc_training import levelset as levelset_module
from dtc_training.checkpoint import load_checkpoint
from dtc_training.config import TrainConfig
from dtc_training.errors import InputError
from dtc_training.levelset import BOUNDARIES, compute_levelset, levelsets
from dtc_training.sampling import IterationBatches, batch_levelsets


def shapes():
    ball = np.linalg.norm(np.argwhere(np.ones((10, 10, 10))) - 4.5, axis=1).reshape(10, 10, 10) < 3.2
    edge_box = np.zeros((8, 9, 7), bool)
    edge_box[0:4, 2:9, 3:7] = True  # touches three faces of the patch
    one_voxel = np.zeros((7, 7, 7), bool)
    one_voxel[3, 2, 4] = True
    return {"ball": ball, "box touching the patch edge": edge_box, "one voxel": one_voxel}


def brute_force_half_voxel(mask: np.ndarray) -> np.ndarray:
    """The definition voxel by voxel: distance to the other side's nearest voxel less half a voxel, each side
    divided by its largest value; negative inside."""
    fg, bg = np.argwhere(mask), np.argwhere(~mask)
    shifted = np.zeros(mask.shape)
    for c in np.argwhere(np.ones_like(mask)):
        other = bg if mask[tuple(c)] else fg
        shifted[tuple(c)] = np.sqrt(((other - c) ** 2).sum(1)).min() - 0.5
    return np.where(mask, -shifted / shifted[mask].max(), shifted / shifted[~mask].max())


@pytest.mark.parametrize("name", list(shapes()))
def test_half_voxel_is_negative_on_exactly_the_mask(name):
    mask = shapes()[name]
    z = compute_levelset(mask, "half-voxel")
    np.testing.assert_array_equal(z < 0, mask)
    np.testing.assert_array_equal(z > 0, ~mask)  # no voxel at 0: the zero level lies between voxels
    assert z.min() == pytest.approx(-1) and z.max() == pytest.approx(1)
    np.testing.assert_allclose(z, brute_force_half_voxel(mask), atol=1e-6)
    # the official target leaves the inner boundary at 0, so its {z < 0} misses that layer
    assert (compute_levelset(mask)[mask] == 0).any()


def test_half_voxel_keeps_the_official_edge_cases():
    for mask in (np.zeros((6, 6, 6)), np.ones((6, 6, 6))):
        assert not compute_levelset(mask, "half-voxel").any()


def test_official_stays_the_default_and_an_unknown_boundary_is_refused():
    mask = shapes()["ball"]
    np.testing.assert_array_equal(compute_levelset(mask), compute_levelset(mask, "official"))
    with pytest.raises(ValueError, match="half-voxel"):
        compute_levelset(mask, "half")
    assert TrainConfig().levelset_boundary == "official"
    assert TrainConfig.from_dict({"iterations": 10}).levelset_boundary == "official"  # a run saved before
    for boundary in BOUNDARIES:  # the command line's check accepts what the level sets know
        TrainConfig(levelset_boundary=boundary).check()
    with pytest.raises(InputError, match="--levelset-boundary"):
        TrainConfig(levelset_boundary="half").check()


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_the_gpu_path_equals_the_cpu_path(monkeypatch, boundary):
    rng = np.random.default_rng(5)
    # sparse, dense, empty, full, and the shapes above padded into one patch
    masks = rng.random((4, 11, 10, 10)) < np.array([0.03, 0.5, 0.0, 1.0])[:, None, None, None]
    padded = [np.pad(m, [(0, a - s) for a, s in zip((11, 10, 10), m.shape)]) for m in shapes().values()]
    masks = torch.from_numpy(np.concatenate([masks, np.stack(padded)]))
    on_cpu = levelsets(masks, boundary).numpy()
    monkeypatch.setattr(levelset_module, "_scipy_distances", levelset_module._torch_distances)
    np.testing.assert_allclose(levelsets(masks, boundary).numpy(), on_cpu, rtol=0, atol=1e-7)


def ball_case(shape, seed):
    rng = np.random.default_rng(seed)
    centre = rng.uniform(6, np.array(shape) - 6)
    label = np.linalg.norm(np.indices(shape).T - centre, axis=-1).T < 5
    return {"name": f"ball{seed}", "image": rng.random(shape, dtype=np.float32), "label": label.astype(np.uint8)}


@pytest.mark.parametrize("target", ["patch", "volume"])
def test_every_place_a_target_is_computed_follows_the_boundary(target):
    cases = [ball_case((24, 20, 14), seed) for seed in range(3)]
    make = lambda **kw: IterationBatches(cases, [], 2, 0, (16, 16, 12), seed=1, iterations=20,
                                         levelset_target=target, levelset_boundary="half-voxel", **kw)
    in_workers, on_device = make(), make(patch_levelsets=False)
    for t in range(5):
        a, b = in_workers[t], on_device[t]
        label = a["label"][:, 0].numpy() > 0
        np.testing.assert_array_equal(a["levelset"][:, 0].numpy() < 0, label)
        if target == "patch":  # the crop's own target, in the workers and on the training device alike
            np.testing.assert_allclose(a["levelset"][:, 0].numpy(),
                                       np.stack([compute_levelset(m, "half-voxel") for m in label]), atol=1e-7)
        np.testing.assert_array_equal(batch_levelsets(b, b["label"], "half-voxel").numpy(), a["levelset"].numpy())


def test_dtc_train_half_voxel_trains_records_and_resumes_with_it(phantoms, tmp_path):
    first = {}
    for boundary in BOUNDARIES:
        proc = run_dtc("train", "--datalist", phantoms, "-o", tmp_path / boundary, "--iterations", 2,
                       "--levelset-boundary", boundary, *TINY)
        first[boundary] = events(proc.stdout, "progress")[0]
    # the same first batch and weights: the same Dice loss, another level-set target
    assert first["half-voxel"]["loss_dice"] == first["official"]["loss_dice"]
    assert first["half-voxel"]["loss_levelset"] != first["official"]["loss_levelset"]
    run = tmp_path / "half-voxel"
    assert load_checkpoint(run / "checkpoint.pt")["config"]["levelset_boundary"] == "half-voxel"
    run_dtc("train", "--datalist", phantoms, "-o", run, "--resume", "--iterations", 3, "--progress", "json")
    assert load_checkpoint(run / "checkpoint.pt")["iteration"] == 3
    assert json.loads((run / "train_config.json").read_text())["config"]["levelset_boundary"] == "half-voxel"
