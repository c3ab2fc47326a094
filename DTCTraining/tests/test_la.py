"""The UA-MT h5 layout of the LA data, built here in miniature: the root or its cases folder may be named."""
import json

import h5py
import numpy as np
import pytest

from conftest import run_dtc
from dtc_training import la
from dtc_training.errors import InputError


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "data"
    for case_id in ("caseA", "caseB"):
        folder = root / la.CASES_FOLDER / case_id
        folder.mkdir(parents=True)
        with h5py.File(folder / "mri_norm2.h5", "w") as f:
            f["image"] = np.full((4, 5, 6), 1.5, np.float32)
            f["label"] = np.ones((4, 5, 6), np.uint8)
    (root / "train.list").write_text("caseB\ncaseA\n")
    return root


def test_the_root_or_the_cases_folder_reads_the_same_cases(layout):
    for root in (layout, layout / la.CASES_FOLDER):
        assert la.read_case_list(root) == ["caseB", "caseA"]
        image, label = la.read_case(root, "caseA")
        assert image.shape == label.shape == (4, 5, 6) and float(image[0, 0, 0]) == 1.5


def test_a_case_list_outside_the_layout_is_not_picked_up(layout):
    (layout.parent / "test.list").write_text("caseA\n")  # beside the root: another dataset's list
    with pytest.raises(InputError, match=r"data/test.list: case list not found"):
        la.read_case_list(layout, "test.list")


def test_a_resume_continues_on_the_runs_own_cases(tmp_path):
    """`--resume` without --labeled/--unlabeled/--holdout keeps the run's selection, not the defaults (16
    labeled, the rest unlabeled, none held out), which silently changed the data of a resumed run."""
    root = tmp_path / "LA"
    cases = [f"case{i}" for i in range(4)]
    for i, case in enumerate(cases):
        label = np.linalg.norm(np.indices((40, 36, 24)).transpose(1, 2, 3, 0) - (20 + i, 18, 12), axis=-1) < 8
        (root / la.CASES_FOLDER / case).mkdir(parents=True)
        with h5py.File(root / la.CASES_FOLDER / case / "mri_norm2.h5", "w") as f:
            f["image"], f["label"] = label.astype(np.float32), label.astype(np.uint8)
    (root / "train.list").write_text("\n".join(cases) + "\n")
    tiny = ["--patch", "32", "32", "16", "--n-filters", "2", "--workers", "0", "--progress", "json"]
    run_dtc("train", "--la-root", root, "--labeled", 1, "--unlabeled", 2, "--holdout", 1, "-o", tmp_path / "run",
            "--iterations", 1, *tiny)
    resumed = run_dtc("train", "--la-root", root, "-o", tmp_path / "run", "--resume", "--iterations", 2, *tiny)
    start = next(json.loads(line) for line in resumed.stdout.splitlines() if '"start"' in line)
    assert (start["labeled"], start["unlabeled"], start["validation"]) == (1, 2, 1)
    assert "other data" not in resumed.stderr
