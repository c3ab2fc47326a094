"""`dtc evaluate` from files and from a model over the UA-MT h5 layout: known answers, table, JSON, CSV."""
import csv
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_dtc
from dtc_training import la
from dtc_training.metrics import dice
from test_infer import threshold_model_file


def write_mask(path, array, spacing=(2.0, 1.0, 1.0)):
    """`array` is (x, y, z)."""
    image = sitk.GetImageFromArray(array.astype(np.uint8).transpose(2, 1, 0))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def cube_with_far_blob():
    gt = np.zeros((40, 40, 40), bool)
    gt[10:14, 10:14, 10:14] = True
    pred = gt.copy()
    pred[30, 10:14, 10] = True
    return pred, gt


def test_files_from_folders_with_known_answers(tmp_path):
    preds, gts = tmp_path / "pred", tmp_path / "gt"
    preds.mkdir(), gts.mkdir()
    pred, gt = cube_with_far_blob()
    write_mask(preds / "case1-label.nrrd", pred)  # as `dtc infer` names it
    write_mask(preds / "case1-probability.nrrd", np.zeros_like(pred))  # skipped
    write_mask(gts / "case1.nrrd", gt)
    write_mask(preds / "case2.nrrd", np.zeros_like(gt))  # empty prediction
    write_mask(gts / "case2.nrrd", gt)
    proc = run_dtc("evaluate", "--pred", preds, "--gt", gts, "--json", tmp_path / "r.json", "--csv", tmp_path / "r.csv")
    assert "largest_component: False" in proc.stdout and "empty prediction" in proc.stdout
    result = json.loads((tmp_path / "r.json").read_text())
    case1, case2 = result["cases"]
    assert case1["case"] == "case1" and case1["dice"] == pytest.approx(128 / 132)
    assert case1["hd95_voxels"] == 0.0 and case1["asd_voxels"] == pytest.approx(68 / 60)
    assert case1["asd_mm"] == pytest.approx(2 * 68 / 60)  # the blob is 17 voxels away along x (2 mm)
    assert case2["empty_prediction"] and case2["dice"] == 0.0 and case2["hd95_mm"] == 0.0
    assert result["mean"]["dice"] == pytest.approx(64 / 132)
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [r["case"] for r in rows] == ["case1", "case2", "mean"]
    assert float(rows[2]["dice"]) == pytest.approx(64 / 132)


def test_a_scan_beside_its_label_is_never_scored_as_prediction_or_ground_truth(tmp_path):
    # `dtc infer data/ -o data/` writes case-label beside case; a ground-truth folder may hold both too.
    preds, gts = tmp_path / "pred", tmp_path / "gt"
    preds.mkdir(), gts.mkdir()
    pred, gt = cube_with_far_blob()
    scan = np.ones_like(gt)  # scored as a mask, a scan would give a low Dice
    write_mask(preds / "case.nrrd", scan)
    write_mask(preds / "case-label.nrrd", pred)
    write_mask(gts / "case.nrrd", scan)
    write_mask(gts / "case-label.nrrd", gt)
    run_dtc("evaluate", "--pred", preds, "--gt", gts, "--json", tmp_path / "r.json")
    (case,) = json.loads((tmp_path / "r.json").read_text())["cases"]
    assert case["case"] == "case" and case["dice"] == pytest.approx(128 / 132)
    write_mask(preds / "case.nii.gz", pred)  # two files for one case, neither a -label beside a scan
    (preds / "case-label.nrrd").unlink()
    proc = run_dtc("evaluate", "--pred", preds, "--gt", gts, check=False)
    assert proc.returncode == 2 and "case.nii.gz, case.nrrd are all case 'case'" in proc.stderr


def test_largest_component_option_is_applied_and_reported(tmp_path):
    pred, gt = cube_with_far_blob()
    write_mask(tmp_path / "p.nrrd", pred), write_mask(tmp_path / "g.nrrd", gt)
    run_dtc("evaluate", "--pred", tmp_path / "p.nrrd", "--gt", tmp_path / "g.nrrd", "--largest-component",
            "--json", tmp_path / "r.json")
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["settings"]["largest_component"] is True
    assert result["cases"][0]["dice"] == 1.0 and result["cases"][0]["asd_voxels"] == 0.0


def test_empty_ground_truth_is_written_as_null_distances(tmp_path):
    pred, gt = cube_with_far_blob()
    write_mask(tmp_path / "p.nrrd", pred), write_mask(tmp_path / "g.nrrd", np.zeros_like(gt))
    proc = run_dtc("evaluate", "--pred", tmp_path / "p.nrrd", "--gt", tmp_path / "g.nrrd", "--json", tmp_path / "r.json")
    assert "empty truth" in proc.stdout and "n/a" in proc.stdout
    case = json.loads((tmp_path / "r.json").read_text())["cases"][0]
    assert case["empty_truth"] and case["hd95_voxels"] is None and case["dice"] == 0.0


def test_prediction_on_another_grid_is_refused(tmp_path):
    pred, gt = cube_with_far_blob()
    write_mask(tmp_path / "p.nrrd", pred[:, :, :30]), write_mask(tmp_path / "g.nrrd", gt)
    proc = run_dtc("evaluate", "--pred", tmp_path / "p.nrrd", "--gt", tmp_path / "g.nrrd", check=False)
    assert proc.returncode == 2 and "not on the grid" in proc.stderr


def fake_la_root(root, cases):
    """The UA-MT layout with balls of intensity 1 (already 'normalised') and their labels."""
    for i, case in enumerate(cases):
        grid = np.indices((40, 36, 24)).transpose(1, 2, 3, 0)
        label = np.linalg.norm(grid - (20 + i, 18, 12), axis=-1) < 8
        (root / "2018LA_Seg_Training Set" / case).mkdir(parents=True)
        with h5py.File(root / "2018LA_Seg_Training Set" / case / "mri_norm2.h5", "w") as f:
            f["image"], f["label"] = label.astype(np.float32), label.astype(np.uint8)
    (root / "test.list").write_text("\n".join(cases) + "\n")


def test_model_over_the_h5_layout(tmp_path):
    # The threshold network labels image > 0.5 exactly when the image is not normalised again, as the
    # stored h5 images already are: a perfect score proves no second z-score was applied.
    model = threshold_model_file(tmp_path / "model.pt", spacing=(0.625, 0.625, 0.625))
    fake_la_root(tmp_path / "LA", ["caseA", "caseB"])
    proc = run_dtc("evaluate", "--model", model, "--la-root", tmp_path / "LA", "--mode", "official",
                   "--json", tmp_path / "r.json")
    result = json.loads((tmp_path / "r.json").read_text())
    assert [c["case"] for c in result["cases"]] == ["caseA", "caseB"]
    assert result["mean"]["dice"] == 1.0 and result["mean"]["hd95_mm"] == 0.0
    assert result["settings"]["mode"] == "official" and result["settings"]["largest_component"] is False
    assert "caseB" in proc.stdout


def test_real_la_case(tmp_path, la_root):
    model = threshold_model_file(tmp_path / "model.pt", spacing=(0.625, 0.625, 0.625))
    proc = run_dtc("evaluate", "--model", model, "--la-root", la_root, "--cases", "train.list",
                   "--max-cases", 1, "--precision", "fp32", "--json", tmp_path / "r.json")
    result = json.loads((tmp_path / "r.json").read_text())
    # The threshold network labels the stored (already z-scored) image > 0.5, whatever the window grid
    # (in fp32: int8 moves a threshold by its quantization step).
    image, label = la.read_case(la_root, la.read_case_list(la_root)[0])
    assert result["count"] == 1 and result["mean"]["dice"] == pytest.approx(dice(image > 0.5, label), abs=1e-4)
    assert "mean" in proc.stdout


def test_a_list_of_the_layout_wins_over_a_file_of_that_name_in_the_current_folder(tmp_path, monkeypatch):
    model = threshold_model_file(tmp_path / "model.pt", spacing=(0.625, 0.625, 0.625))
    fake_la_root(tmp_path / "LA", ["caseA", "caseB"])
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "test.list").write_text("caseB\n")  # another dataset's list where the command runs
    monkeypatch.chdir(tmp_path / "work")
    run_dtc("evaluate", "--model", model, "--la-root", tmp_path / "LA", "--json", tmp_path / "r.json")
    assert [c["case"] for c in json.loads((tmp_path / "r.json").read_text())["cases"]] == ["caseA", "caseB"]
    run_dtc("evaluate", "--model", model, "--la-root", tmp_path / "LA", "--cases", "./test.list",
            "--json", tmp_path / "r.json")  # a path, not a bare name: that file
    assert [c["case"] for c in json.loads((tmp_path / "r.json").read_text())["cases"]] == ["caseB"]


def test_bad_arguments_are_clear_errors(tmp_path):
    assert run_dtc("evaluate", check=False).returncode == 2
    proc = run_dtc("evaluate", "--model", tmp_path / "m.pt", "--la-root", tmp_path, "--max-cases", 0, check=False)
    assert proc.returncode == 2 and "argument --max-cases: 0: must be at least 1" in proc.stderr
    proc = run_dtc("evaluate", "--model", tmp_path / "m.pt", "--la-root", tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_scoring_files_loads_neither_torch_nor_monai():
    # `dtc evaluate --pred --gt` answers in about a second: importing torch and MONAI costs 5-8 s on 2 cores.
    code = ("import sys; from dtc_training.cli import main; main(['evaluate', '--pred', 'missing.nrrd', '--gt', "
            "'missing.nrrd']); print(sorted({'torch', 'monai'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "file not found" in proc.stderr, proc.stderr
    assert proc.stdout.strip() == "[]"
