from collections import Counter

import numpy as np
import pytest

from dtc_training.levelset import compute_levelset
from dtc_training.sampling import LABELED, IterationBatches, batch_levelsets, draw_cases
from dtc_training.transforms import training_augmentation


def coded_case(shape, name, seed):
    """An image that encodes each voxel's original position, so any transform can be traced back."""
    rng = np.random.default_rng(seed)
    label = (rng.random(shape) > 0.7).astype(np.uint8)
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    return {"name": name, "image": image, "label": label}


def batches(n_lab=3, n_unl=5, **kw):
    shape = (20, 18, 12)
    labeled = [coded_case(shape, f"l{i}", i) for i in range(n_lab)]
    unlabeled = [{k: v for k, v in coded_case(shape, f"u{i}", 10 + i).items() if k != "label"} for i in range(n_unl)]
    for i, c in enumerate(unlabeled):
        c["image"] = c["image"] + 1e6 * (i + 1)  # tell unlabeled cases apart from labeled ones
    args = dict(labeled_batch=2, unlabeled_batch=2, patch_size=(16, 16, 8), seed=7, iterations=100)
    args.update(kw)
    return IterationBatches(labeled, unlabeled, **args), labeled, unlabeled


def test_batch_holds_labeled_items_first_then_unlabeled():
    ds, labeled, unlabeled = batches()
    b = ds[5]
    assert b["image"].shape == (4, 1, 16, 16, 8)
    assert b["label"].shape == b["levelset"].shape == (2, 1, 16, 16, 8)
    assert (b["image"][:2] < 1e6).all() and (b["image"][2:] >= 1e6).all()


def test_every_case_once_per_epoch_and_ranks_do_not_overlap():
    slots = range(0, 15)
    assert Counter(draw_cases(5, slots, seed=1, stream=0)) == Counter({i: 3 for i in range(5)})
    for epoch in range(3):
        assert sorted(draw_cases(5, range(5 * epoch, 5 * epoch + 5), 1, 0)) == list(range(5))
    rank0 = draw_cases(6, range(0, 2), 1, 0) + draw_cases(6, range(4, 6), 1, 0)
    rank1 = draw_cases(6, range(2, 4), 1, 0)
    assert not set(rank0) & set(rank1)


def test_batches_are_a_pure_function_of_the_iteration():
    a, _, _ = batches()
    b, _, _ = batches()
    assert np.array_equal(a[17]["image"], b[17]["image"])
    assert not np.array_equal(a[17]["image"], a[18]["image"])


def test_label_and_levelset_move_with_the_image():
    ds, labeled, _ = batches()
    for t in range(10):
        b = ds[t]
        drawn = draw_cases(len(labeled), range(2 * t, 2 * t + 2), 7, LABELED)  # batch size 2, seed 7, one rank
        for j in range(2):
            codes = b["image"][j, 0].numpy().astype(np.int64)
            # the labels must be the drawn case's labels at the voxels its codes say the crop came from
            source = labeled[drawn[j]]
            np.testing.assert_array_equal(source["label"].reshape(-1)[codes.reshape(-1)],
                                          b["label"][j, 0].numpy().reshape(-1))
            np.testing.assert_allclose(b["levelset"][j, 0].numpy(), compute_levelset(b["label"][j, 0].numpy()))


def test_level_sets_left_to_the_training_step_equal_the_workers_ones():
    # On a GPU the training step computes the crops' level sets; the crops themselves must not change.
    switches = dict(intensity_augmentation=True, spatial_augmentation=True, low_contrast_augmentation=True)
    in_workers, _, _ = batches(**switches)
    on_device, _, _ = batches(**switches, patch_levelsets=False)
    for t in range(6):
        a, b = in_workers[t], on_device[t]
        assert "levelset" not in b
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])
        np.testing.assert_array_equal(batch_levelsets(b, b["label"]).numpy(), a["levelset"].numpy())
        assert np.array_equal(batch_levelsets(a, a["label"]), a["levelset"]) and a["levelset"].abs().max() > 0


def test_rotation_covers_k0_to_k3_and_flips_only_x_or_y():
    shape = (16, 16, 8)
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    transform = training_augmentation(shape, labeled=False)
    seen = Counter()
    for seed in range(200):
        transform.set_random_state(seed=seed)
        out = np.asarray(transform({"image": image[None]})["image"])[0]
        assert np.array_equal(np.sort(out[:, :, 0].ravel()), np.sort(image[:, :, 0].ravel()))  # z is neither rotated nor flipped
        matches = [(k, axis) for k in range(4) for axis in (0, 1)
                   if np.array_equal(out, np.flip(np.rot90(image, k, axes=(0, 1)), axis))]
        # always a flip: (k, axis) and (k+2, 1-axis) give the same result, so every output matches two
        assert len(matches) == 2, (seed, matches)
        seen.update(matches)
    assert len(seen) == 8


def test_volume_smaller_than_the_patch_is_zero_padded():
    ds, _, _ = batches(patch_size=(32, 32, 16))
    b = ds[0]
    assert b["image"].shape == (4, 1, 32, 32, 16)
    assert (b["image"][0, 0] == 0).sum() >= 32 * 32 * 16 - 20 * 18 * 12


def test_supervised_only_when_there_is_no_unlabeled_case():
    ds, _, _ = batches(n_unl=0)
    assert ds[0]["image"].shape[0] == 2


def test_two_ranks_together_draw_the_items_of_one_rank_with_the_global_batch():
    whole, _, _ = batches(labeled_batch=2, unlabeled_batch=2)
    halves = [batches(labeled_batch=1, unlabeled_batch=1, rank=r, world_size=2)[0] for r in (0, 1)]
    for t in (0, 9):
        split = [h[t] for h in halves]
        assert np.array_equal(whole[t]["label"], np.concatenate([s["label"] for s in split]))
        unlabeled = np.concatenate([s["image"][1:] for s in split])
        assert np.array_equal(whole[t]["image"][2:], unlabeled)


def changed_images(plain, varied, check) -> int:
    """How many images of the first 20 batches (80 images) differ between two datasets; `check(a, b)`
    runs on every pair of batches."""
    changed = 0
    for t in range(20):
        a, b = plain[t], varied[t]
        check(a, b)
        changed += sum(not np.array_equal(x, y) for x, y in zip(a["image"], b["image"]))
    return changed


def test_intensity_augmentation_changes_intensities_only():
    def same_geometry(a, b):  # the geometric draws are the same, so labels and level sets are identical
        assert np.array_equal(a["label"], b["label"]) and np.array_equal(a["levelset"], b["levelset"])

    changed = changed_images(batches()[0], batches(intensity_augmentation=True)[0], same_geometry)
    assert changed > 5  # each image has a 1 - 0.85 * 0.7 * 0.9 chance of changing


def test_volume_levelset_is_the_whole_labels_level_set_moved_with_the_image():
    patch_mode, labeled, _ = batches(intensity_augmentation=False)
    volume_mode, _, _ = batches(levelset_target="volume")
    differs = 0
    for t in range(10):
        a, b = patch_mode[t], volume_mode[t]
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])
        for j in range(2):
            codes = b["image"][j, 0].numpy().astype(np.int64).reshape(-1)
            source = next(c for c in labeled if np.array_equal(c["label"].reshape(-1)[codes],
                                                               b["label"][j, 0].numpy().reshape(-1)))
            whole = compute_levelset(source["label"]).reshape(-1)[codes]
            np.testing.assert_allclose(b["levelset"][j, 0].numpy().reshape(-1), whole, atol=1e-6)
            differs += not np.allclose(a["levelset"][j], b["levelset"][j])
    assert differs > 10  # the crop's own level set is another target


def test_volume_levelset_of_a_padded_volume_is_the_level_set_of_the_whole_padded_patch():
    ds, _, _ = batches(patch_size=(32, 32, 16), levelset_target="volume")
    for t in range(4):
        b = ds[t]
        for j in range(2):
            np.testing.assert_allclose(b["levelset"][j, 0].numpy(), compute_levelset(b["label"][j, 0].numpy()),
                                       atol=1e-6)


def test_spatial_augmentation_resamples_some_crops_and_keeps_labels_binary_with_their_level_set():
    def binary_labels_with_their_level_sets(a, b):
        assert b["image"].shape == a["image"].shape and b["label"].shape == a["label"].shape
        assert set(np.unique(b["label"].numpy())) <= {0.0, 1.0}
        for j in range(2):
            np.testing.assert_allclose(b["levelset"][j, 0].numpy(), compute_levelset(b["label"][j, 0].numpy()))

    changed = changed_images(batches()[0], batches(spatial_augmentation=True)[0], binary_labels_with_their_level_sets)
    assert 5 < changed < 80  # each image is rotated or scaled with probability 0.3


def test_spatial_augmentation_never_marks_rotated_in_background_as_boundary_in_a_volume_level_set():
    # A ball well inside a volume the size of the patch: every crop is the whole volume, its edges are
    # background, and voxels rotated in from outside (image exactly 0) are background, far from the ball.
    shape = (32, 32, 16)
    grid = np.indices(shape) - np.array([16, 16, 8])[:, None, None, None]
    label = ((grid ** 2).sum(0) <= 25).astype(np.uint8)
    image = 1 + np.random.default_rng(0).random(shape).astype(np.float32)
    ds = IterationBatches([{"name": "ball", "image": image, "label": label}], [], 2, 0, shape, seed=3,
                          iterations=40, levelset_target="volume", spatial_augmentation=True)
    rotated_in = 0
    for t in range(40):
        b = ds[t]
        padded = b["image"][:2] == 0
        rotated_in += int(padded.sum())
        assert (b["levelset"][padded] > 0).all()
    assert rotated_in > 1000  # some crops were rotated or shrunk


def test_low_contrast_augmentation_scales_some_images_towards_zero_and_keeps_the_geometry():
    def same_geometry_and_a_scale_of_at_most_one(a, b):
        assert np.array_equal(a["label"], b["label"]) and np.array_equal(a["levelset"], b["levelset"])
        for x, y in zip(a["image"].numpy(), b["image"].numpy()):
            scale = y[x != 0] / x[x != 0]
            assert np.allclose(scale, scale[0], rtol=1e-4) and 0.2 - 1e-6 <= scale[0] <= 1 + 1e-6

    changed = changed_images(batches()[0], batches(low_contrast_augmentation=True)[0],
                             same_geometry_and_a_scale_of_at_most_one)
    assert 3 < changed < 40  # each image is scaled with probability 0.2
