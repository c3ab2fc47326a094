"""make_builtin_model.py: a trained run's model plus its provenance become the shipped fp16 safetensors file,
the catalog's built-in entry describes that file, and what would be too large or lacks provenance is
refused with nothing written."""
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1]
REPO = BENCHMARKS.parent
sys.path.insert(0, str(REPO / "DTCTraining"))

PROVENANCE = {"training_data": "2018 Atrial Segmentation Challenge, 80 LGE-MRI, University of Utah",
              "recipe": "supervised, 1.25 mm", "command": "dtc train --la-root LA --labeled 80 ...",
              "commit": "0123456789abcdef", "date": "2026-12-06", "hardware": "2 CPU cores",
              "development_split": {"dice": 0.9}, "intended_use": "research, not clinical diagnosis"}


@pytest.fixture
def run(tmp_path):
    import torch
    from dtc_training.model import DualTaskVNet
    from dtc_training.model_io import save_model

    torch.manual_seed(0)
    meta = {"n_filters": 4, "in_channels": 1, "patch_size": [16, 16, 16], "spacing": [1.25, 1.25, 1.25],
            "normalization": "zscore", "k": 1500.0, "label_name": "Left atrium"}
    model = save_model(tmp_path / "model.safetensors", DualTaskVNet(n_filters=4), meta)
    catalog = shutil.copy(REPO / "DTCTraining" / "dtc_training" / "models.json", tmp_path / "models.json")
    (tmp_path / "provenance.json").write_text(json.dumps(PROVENANCE))
    return tmp_path, model, Path(catalog)


def make(folder, model, catalog, *extra):
    return subprocess.run([sys.executable, str(BENCHMARKS / "make_builtin_model.py"), str(model), "--provenance",
                           str(folder / "provenance.json"), "--catalog", str(catalog), "-o",
                           str(folder / "Models" / "la-builtin.safetensors"), *extra],
                          capture_output=True, text=True, timeout=300)


def test_the_shipped_file_is_fp16_with_its_provenance_and_the_catalog_describes_it(run):
    from dtc_training.model_io import load_model
    from dtc_training.model_metadata import read_header

    folder, model, catalog = run
    proc = make(folder, model, catalog, "--version", "cpu-1")
    assert proc.returncode == 0, proc.stderr
    shipped = folder / "Models" / "la-builtin.safetensors"
    meta, table = read_header(shipped)
    assert {dtype for dtype, _, _ in table.values()} == {"F16", "I64"}
    assert meta["provenance"]["training_data"].startswith("2018 Atrial") and meta["provenance"]["version"] == "cpu-1"
    assert meta["spacing"] == [1.25] * 3
    original, _ = load_model(model)
    half, _ = load_model(shipped)
    assert all(v.dtype == original.state_dict()[k].dtype for k, v in half.state_dict().items())
    entry = next(e for e in json.loads(catalog.read_text())["models"] if e["id"] == "la-builtin")
    assert entry["version"] == "cpu-1" and entry["size"] == shipped.stat().st_size
    assert entry["checksum"] == "sha256:" + hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert sorted(p.name for p in shipped.parent.iterdir()) == ["la-builtin.safetensors"]


@pytest.mark.parametrize("case", ["too large", "no provenance"])
def test_a_file_over_the_limit_or_without_provenance_is_refused(run, case):
    folder, model, catalog = run
    before = catalog.read_text()
    if case == "no provenance":
        (folder / "provenance.json").write_text(json.dumps({k: v for k, v in PROVENANCE.items() if k != "hardware"}))
    proc = make(folder, model, catalog, *(["--max-mib", "0.1"] if case == "too large" else []))
    assert proc.returncode == 2 and ("over the 0.1 MiB" if case == "too large" else "lacks hardware") in proc.stderr
    assert catalog.read_text() == before
    assert not (folder / "Models").exists() or list((folder / "Models").iterdir()) == []
