"""Metrics against hand-built cases whose answers are worked out by hand (medpy semantics)."""
import math

import numpy as np
import pytest

from dtc_training.metrics import case_metrics, mean_metrics


def cube(shape=(40, 40, 40), lo=10, hi=14):
    mask = np.zeros(shape, bool)
    mask[lo:hi, lo:hi, lo:hi] = True
    return mask


def test_identical_masks_score_perfectly():
    m = case_metrics(cube(), cube(), (1.0, 2.0, 3.0))
    assert m["dice"] == m["jaccard"] == 1.0
    assert m["hd95_voxels"] == m["asd_voxels"] == m["hd95_mm"] == m["asd_mm"] == 0.0


def test_single_voxels_three_apart_in_voxels_and_mm():
    pred, gt = np.zeros((10, 10, 10), bool), np.zeros((10, 10, 10), bool)
    gt[5, 5, 5], pred[5, 5, 8] = True, True
    m = case_metrics(pred, gt, (1.0, 1.0, 2.5))
    assert m["dice"] == m["jaccard"] == 0.0
    assert m["hd95_voxels"] == m["asd_voxels"] == 3.0
    assert m["hd95_mm"] == m["asd_mm"] == 7.5


def test_spurious_far_blob_pools_both_directions_for_hd95():
    # A 4^3 cube (56 surface voxels) predicted exactly plus a 4-voxel line 17 voxels away. Pooled
    # distances: 112 zeros and four 17s, whose 95th percentile is 0 (MONAI's max of the two directed
    # percentiles would give 17). ASD is one-directional: 4 * 17 / 60 surface voxels of the prediction.
    gt = cube()
    pred = gt.copy()
    pred[30, 10:14, 10] = True
    m = case_metrics(pred, gt, (2.0, 1.0, 1.0))
    assert m["dice"] == pytest.approx(128 / 132)
    assert m["jaccard"] == pytest.approx(64 / 68)
    assert m["hd95_voxels"] == 0.0
    assert m["asd_voxels"] == pytest.approx(68 / 60)
    assert m["asd_mm"] == pytest.approx(2 * 68 / 60)


def test_asd_is_measured_from_the_prediction_only():
    # Swapping roles: the blob is now in the ground truth, and the prediction's surface is all on the cube.
    gt = cube()
    gt[30, 10:14, 10] = True
    m = case_metrics(cube(), gt, (1.0, 1.0, 1.0))
    assert m["asd_voxels"] == 0.0


def test_surface_voxels_on_the_array_edge_count():
    full = np.ones((5, 5, 5), bool)
    inner = np.zeros((5, 5, 5), bool)
    inner[1:4, 1:4, 1:4] = True
    m = case_metrics(inner, full, (1.0, 1.0, 1.0))
    # The array edge counts as outside, so the full block's surface is its outer shell: one voxel from
    # each of the 26 surface voxels of the inner 3^3 cube.
    assert m["asd_voxels"] == 1.0


def test_empty_prediction_scores_zero_as_the_official_code():
    m = case_metrics(np.zeros((8, 8, 8)), cube((8, 8, 8), 2, 5), (1.0, 1.0, 1.0))
    assert m["empty_prediction"] and not m["empty_truth"]
    assert all(m[k] == 0.0 for k in ("dice", "jaccard", "hd95_voxels", "asd_voxels", "hd95_mm", "asd_mm"))


def test_empty_truth_has_no_distances():
    m = case_metrics(cube((8, 8, 8), 2, 5), np.zeros((8, 8, 8)), (1.0, 1.0, 1.0))
    assert m["empty_truth"] and m["dice"] == 0.0 and m["jaccard"] == 0.0
    assert math.isnan(m["hd95_mm"]) and math.isnan(m["asd_voxels"])


def test_mean_leaves_out_undefined_distances_but_keeps_empty_predictions():
    perfect = case_metrics(cube(), cube(), (1.0, 1.0, 1.0))
    empty_pred = case_metrics(np.zeros((40, 40, 40)), cube(), (1.0, 1.0, 1.0))
    empty_truth = case_metrics(cube(), np.zeros((40, 40, 40)), (1.0, 1.0, 1.0))
    mean = mean_metrics([perfect, empty_pred, empty_truth])
    assert mean["dice"] == pytest.approx(1 / 3)
    assert mean["hd95_voxels"] == 0.0  # NaN of the empty truth left out, not propagated


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        case_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), (1.0, 1.0, 1.0))
