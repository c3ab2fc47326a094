"""The lease tools on a small LA-shaped folder: carry_la.py packs it into parts losslessly, and
`source lease.sh setup` unpacks each carried part once, as a device call on a warm machine would, while
`carry_la.py check` refuses the data until every part has arrived."""
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[1]
CASES = "2018LA_Seg_Training Set"


def make_la(root: Path, names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    arrays = {}
    for name in names:
        image = np.round(rng.normal(size=(20, 18, 12)), 1).astype(np.float32)  # few distinct values, as z-scored 8-bit MRI
        label = (rng.random((20, 18, 12)) > 0.7).astype(np.uint8)
        (root / CASES / name).mkdir(parents=True)
        with h5py.File(root / CASES / name / "mri_norm2.h5", "w") as f:
            f["image"], f["label"] = image, label
        arrays[name] = image, label
    (root / "train.list").write_text("\n".join(names) + "\n")
    return arrays


def run(command: str, **env) -> subprocess.CompletedProcess:
    # python3 in the script is the Python running the tests (monai and SimpleITK installed: nothing to carry)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": path, **env})


def test_parts_unpack_once_and_check_waits_for_all_of_them(tmp_path):
    original = make_la(tmp_path / "LA", ["case_a", "case_b", "case_c"])
    carry, dest = tmp_path / "carry", tmp_path / "unpacked"
    packed = run(f"python3 {BENCHMARKS}/carry_la.py pack {tmp_path / 'LA'} {carry}/la --part-mib 0.001")
    assert packed.returncode == 0, packed.stderr
    parts = sorted((carry / "la").glob("part-*.npz"))
    assert len(parts) == 4  # train.list, then one case per part under this tiny budget

    # call 1 carried the first two parts (train.list and case_a)
    held = tmp_path / "held"
    held.mkdir()
    for part in parts[2:]:
        part.rename(held / part.name)
    setup = f"source {BENCHMARKS}/lease.sh setup"
    env = {"LEASE_CARRY": str(carry), "LEASE_LA": str(dest), "LEASE_SITE": str(tmp_path / "site")}
    first = run(f"{setup} && python3 {BENCHMARKS}/carry_la.py check {dest}", **env)
    assert first.returncode == 1 and "2 missing" in first.stdout, first.stdout + first.stderr

    # call 2 brings the rest; the warm machine still holds the first parts
    for part in held.iterdir():
        part.rename(carry / "la" / part.name)
    second = run(f"{setup} && python3 {BENCHMARKS}/carry_la.py check {dest}", **env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "part-01.npz: unpacked into" in second.stdout and "already" in second.stdout
    assert "3 cases present, 0 bad, 0 missing" in second.stdout
    for name, (image, label) in original.items():
        with h5py.File(dest / CASES / name / "mri_norm2.h5", "r") as f:
            np.testing.assert_array_equal(f["image"][:], image)
            np.testing.assert_array_equal(f["label"][:], label)


def test_check_finds_a_case_changed_after_unpacking(tmp_path):
    make_la(tmp_path / "LA", ["case_a", "case_b"])
    assert run(f"python3 {BENCHMARKS}/carry_la.py pack {tmp_path / 'LA'} {tmp_path}/parts").returncode == 0
    assert run(f"python3 {BENCHMARKS}/carry_la.py unpack {tmp_path}/parts {tmp_path}/out").returncode == 0
    with h5py.File(tmp_path / "out" / CASES / "case_b" / "mri_norm2.h5", "r+") as f:
        f["label"][0, 0, 0] = 1 - f["label"][0, 0, 0]
    checked = run(f"python3 {BENCHMARKS}/carry_la.py check {tmp_path}/out")
    assert checked.returncode == 1 and "case_b: arrays differ from the original" in checked.stdout
