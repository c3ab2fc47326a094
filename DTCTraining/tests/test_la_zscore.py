"""`--la-zscore crop`: a model trained on LA crops z-scored over themselves is scored on the h5 cases as a user's
scan or ROI is segmented (z-scored over what it holds), so the two paths give the same label."""
import json

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_dtc
from dtc_training import la
from dtc_training.data import load_la
from dtc_training.finetune import init_settings
from dtc_training.model_io import save_model
from test_infer import PATCH, threshold_network


def crop_layout(root, cases=("caseA", "caseB")):
    """The UA-MT layout with balls stored at 3 x label + 5: not z-scored, so only a z-score over the crop
    brings the ball above 0.5 and the background below it."""
    for i, case in enumerate(cases):
        label = np.linalg.norm(np.indices((40, 36, 24)).transpose(1, 2, 3, 0) - (20 + i, 18, 12), axis=-1) < 8
        (root / la.CASES_FOLDER / case).mkdir(parents=True)
        with h5py.File(root / la.CASES_FOLDER / case / "mri_norm2.h5", "w") as f:
            f["image"], f["label"] = (3.0 * label + 5.0).astype(np.float32), label.astype(np.uint8)
    (root / "train.list").write_text("\n".join(cases) + "\n")
    return root


def threshold_model(path, la_zscore):
    meta = {"n_filters": 4, "in_channels": 1, "patch_size": PATCH, "spacing": list(la.SPACING),
            "normalization": "zscore", "k": 1500.0, "label_name": "ball", "la_zscore": la_zscore}
    save_model(path, threshold_network(), meta)
    return path


@pytest.mark.parametrize("la_zscore, expected_dice", [("crop", 1.0), ("stored", None)])
def test_dtc_evaluate_follows_the_models_la_zscore(tmp_path, la_zscore, expected_dice):
    root = crop_layout(tmp_path / "LA")
    model = threshold_model(tmp_path / "model.safetensors", la_zscore)
    run_dtc("evaluate", "--model", model, "--la-root", root, "--cases", "train.list", "--precision", "fp32",
            "--json", tmp_path / "r.json")
    dice = json.loads((tmp_path / "r.json").read_text())["mean"]["dice"]
    if expected_dice is None:  # as stored, every voxel is above 0.5: the ball is a small share of the label
        assert dice < 0.2
    else:
        assert dice == expected_dice


def test_the_h5_path_and_the_users_path_give_the_same_label(tmp_path):
    """The h5 case written as a file and segmented by `dtc infer` (the user's path) is labelled as
    `dtc evaluate --la-root` labels it, for a model trained with --la-zscore crop."""
    root = crop_layout(tmp_path / "LA", ["caseA"])
    model = threshold_model(tmp_path / "model.safetensors", "crop")
    image, truth = la.read_case(root, "caseA")
    scan = sitk.GetImageFromArray(image.transpose(2, 1, 0))
    scan.SetSpacing(la.SPACING)
    sitk.WriteImage(scan, str(tmp_path / "caseA.nrrd"))
    run_dtc("infer", "--model", model, tmp_path / "caseA.nrrd", "-o", tmp_path / "label.nrrd",
            "--precision", "fp32")
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "label.nrrd"))).transpose(2, 1, 0)
    assert np.array_equal(label > 0, truth > 0)


def test_training_data_is_z_scored_over_each_crop_and_the_model_says_so(tmp_path):
    root = crop_layout(tmp_path / "LA", ["caseA", "caseB", "caseC"])
    data = load_la(root, 1, 1, 1, None, zscore_crop=True)
    for case in (*data.labeled, *data.unlabeled, *data.validation):
        assert abs(float(case["image"].mean())) < 1e-5 and float(case["image"].std()) == pytest.approx(1.0, abs=1e-5)
    assert float(load_la(root, 1, 1, 1, None).labeled[0]["image"].min()) == 5.0  # as stored by default
    run_dtc("train", "--la-root", root, "--labeled", 1, "--unlabeled", 1, "--holdout", 1, "--la-zscore", "crop",
            "-o", tmp_path / "run", "--iterations", 1, "--patch", 32, 32, 16, "--n-filters", 2, "--workers", 0,
            "--progress", "json")
    info = run_dtc("info", tmp_path / "run" / "model.safetensors").stdout
    assert any(line.split() == ["la_zscore", "crop"] for line in info.splitlines())
    # A fine-tuning from that model keeps its normalisation unless told otherwise.
    assert init_settings(tmp_path / "run" / "model.safetensors", {})["la_zscore"] == "crop"
    assert init_settings(tmp_path / "run" / "model.safetensors", {"la_zscore": "stored"})["la_zscore"] == "stored"


def test_an_unknown_la_zscore_is_refused(tmp_path):
    proc = run_dtc("train", "--la-root", tmp_path, "--la-zscore", "scan", "-o", tmp_path / "run", check=False,
                   in_process=True)
    assert proc.returncode == 2 and "--la-zscore" in proc.stderr
