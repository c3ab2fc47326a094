"""The UA-MT h5 layout of the LA data, built here in miniature: the root or its cases folder may be named."""
import h5py
import numpy as np
import pytest

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
