"""The model file: safetensors round trip (fp32 and fp16), metadata read without torch, model files of
earlier versions (`.pt`) loading weights-only and converted, refusal of anything that is not plain
weights, import of official DTC state dicts; through the API and the real CLI (`dtc info`, `dtc convert`,
`dtc import-official`). Crafted and hostile files: test_model_validation.py."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import load_file

from conftest import run_dtc
from dtc_training.infer import Model
from dtc_training.model import DualTaskVNet
from dtc_training.model_io import ModelFileError, import_official, load_model, read_metadata, save_model

META = {"n_filters": 4, "in_channels": 1, "patch_size": [32, 32, 16], "spacing": [1.0, 1.0, 1.0],
        "normalization": "zscore", "k": 1500.0, "label_name": "Left atrium"}


class Payload:
    """Unpickling this object would create `marker`: the proof that a loader executed code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def model_file(tmp_path) -> Path:
    torch.manual_seed(0)
    return save_model(tmp_path / "model.safetensors", DualTaskVNet(n_filters=4), META)


def legacy_file(path: Path, net: torch.nn.Module, meta: dict = META) -> Path:
    """A model file as dtc_training wrote them before safetensors."""
    full = {"architecture": "DualTaskVNet", "format_version": 1, "dtc_training_version": "0.1.0", **meta}
    torch.save({"format": "dtc-model", "metadata": json.dumps(full), "state_dict": net.state_dict()}, path)
    return path


def test_round_trip_keeps_weights_and_metadata(model_file):
    net, meta = load_model(model_file)
    assert not net.training
    saved = load_file(model_file)
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())
    assert meta["architecture"] == "DualTaskVNet" and meta["patch_size"] == [32, 32, 16]
    assert read_metadata(model_file) == meta


def test_fp16_file_is_half_the_size_and_loads_as_float32(tmp_path):
    torch.manual_seed(0)
    net = DualTaskVNet(n_filters=4).eval()
    full = save_model(tmp_path / "full.safetensors", net, META)
    half = save_model(tmp_path / "half.safetensors", net, META, precision="fp16")
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded, _ = load_model(half)
    for key, value in loaded.state_dict().items():
        assert value.dtype == net.state_dict()[key].dtype  # float32 again (and the int64 counters)
        torch.testing.assert_close(value, net.state_dict()[key], rtol=1e-3, atol=1e-4)


def test_the_metadata_reads_without_importing_torch(model_file):
    code = ("import sys; from dtc_training.model_metadata import read_metadata; "
            f"m = read_metadata({str(model_file)!r}); print(m['n_filters'], 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["4", "False"], proc.stderr


def test_a_model_file_of_an_earlier_version_loads_and_converts(tmp_path):
    torch.manual_seed(2)
    net = DualTaskVNet(n_filters=4).eval()
    old = legacy_file(tmp_path / "model.pt", net)
    loaded, meta = load_model(old)
    assert meta["n_filters"] == 4 and all(torch.equal(v, net.state_dict()[k]) for k, v in loaded.state_dict().items())
    proc = run_dtc("convert", old, "-o", tmp_path / "model.safetensors")
    assert "wrote" in proc.stdout
    converted, meta2 = load_model(tmp_path / "model.safetensors")
    assert meta2 == meta and all(torch.equal(v, net.state_dict()[k]) for k, v in converted.state_dict().items())
    info = run_dtc("info", old, "--json")
    assert json.loads(info.stdout)["n_filters"] == 4


def test_convert_adds_metadata_from_a_json_file(tmp_path, model_file):
    extra = tmp_path / "provenance.json"
    extra.write_text(json.dumps({"provenance": {"training_data": "phantoms", "intended_use": "tests"}}))
    run_dtc("convert", model_file, "-o", tmp_path / "out.safetensors", "--precision", "fp16", "--metadata", extra)
    assert read_metadata(tmp_path / "out.safetensors")["provenance"]["training_data"] == "phantoms"
    extra.write_text("[1, 2]")
    proc = run_dtc("convert", model_file, "-o", tmp_path / "again.safetensors", "--metadata", extra, check=False)
    assert proc.returncode == 2 and "provenance.json: holds a JSON list" in proc.stderr
    assert not (tmp_path / "again.safetensors").exists()


def test_a_file_that_would_execute_code_is_refused_naming_the_forbidden_global(tmp_path):
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "dtc-model", "metadata": json.dumps({}), "state_dict": Payload(marker)}, evil)
    with pytest.raises(ModelFileError, match="refused"):
        load_model(evil)
    proc = run_dtc("info", evil, check=False)
    assert proc.returncode == 2 and "refused" in proc.stderr
    assert "system" in proc.stderr and "weights_only" not in proc.stderr  # the reason, not torch's boilerplate
    plain_pickle = tmp_path / "evil.pkl"
    plain_pickle.write_bytes(pickle.dumps(Payload(marker)))
    assert run_dtc("infer", "--model", plain_pickle, evil, "-o", tmp_path / "out.nrrd", check=False).returncode == 2
    with pytest.raises(ModelFileError):
        import_official(evil, tmp_path / "imported.safetensors")
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["safetensors", "legacy"])
def test_truncated_file_is_a_clear_error(tmp_path, model_file, kind):
    path = model_file if kind == "safetensors" else legacy_file(tmp_path / "model.pt", DualTaskVNet(n_filters=4))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load_model(path)


def _write_image(path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.float32)), str(path))


@pytest.mark.parametrize("name, write", [
    ("empty.safetensors", lambda p: p.write_bytes(b"")),
    ("text.pt", lambda p: p.write_text("hello, not a model\n")),
    ("image.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))),
    ("config.json", lambda p: p.write_text('{"n_filters": 16}')),
    ("scan.nrrd", _write_image),
    ("scan.nii.gz", _write_image),
    ("scan.nii", _write_image),
])
def test_a_file_that_is_not_a_model_is_a_clear_error(tmp_path, name, write):
    path = tmp_path / name
    write(path)
    for command in (["info", path], ["import-official", path, "-o", tmp_path / "out.safetensors"],
                    ["convert", path, "-o", tmp_path / "out.safetensors"]):
        proc = run_dtc(*command, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{name}: not a DTC model file" in proc.stderr
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("content, message", [
    ({"format": "dtc-model"}, "damaged DTC model file"),
    ({"format": "dtc-model", "metadata": "{not json", "state_dict": {}}, "damaged DTC model file"),
    ([1, 2, 3], "not a DTC model file"),
])
def test_a_torch_file_that_is_not_a_dtc_model_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "model.pt"
    torch.save(content, path)
    proc = run_dtc("info", path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and message in proc.stderr, proc.stderr


def test_an_official_state_dict_is_not_taken_for_a_model_file(tmp_path):
    path = tmp_path / "official.pth"
    torch.save(DualTaskVNet(n_filters=4).state_dict(), path)
    with pytest.raises(ModelFileError, match="import-official"):
        load_model(path)


def test_a_model_with_several_input_channels_is_refused_for_inference(tmp_path):
    path = save_model(tmp_path / "two.safetensors", DualTaskVNet(in_channels=2, n_filters=4), {**META, "in_channels": 2})
    with pytest.raises(ModelFileError, match="2 input channels"):
        Model.load(path, "cpu")


def test_import_official_gives_the_same_network_with_its_provenance(tmp_path):
    torch.manual_seed(1)
    official = DualTaskVNet(n_filters=4).eval()
    pth = tmp_path / "dtc_16_latest.pth"
    torch.save({f"module.{k}": v for k, v in official.state_dict().items()}, pth)  # a DataParallel checkpoint
    provenance = tmp_path / "provenance.json"
    provenance.write_text(json.dumps({"provenance": {"licence": "MIT", "url": "https://example.org/x.pth"}}))
    out = tmp_path / "imported.safetensors"
    proc = run_dtc("import-official", pth, "-o", out, "--spacing", 0.625, 0.625, 0.625, "--metadata", provenance)
    assert "wrote" in proc.stdout
    net, meta = load_model(out)
    assert meta["n_filters"] == 4 and meta["patch_size"] == [112, 112, 80] and meta["spacing"] == [0.625] * 3
    assert meta["provenance"]["licence"] == "MIT"
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        assert torch.equal(net(x)[0], official(x)[0])
    info = run_dtc("info", out, "--json")
    assert json.loads(info.stdout)["architecture"] == "DualTaskVNet"


@pytest.mark.parametrize("content, message", [
    ({"conv.weight": torch.zeros(3, 3)}, "weights do not fit the official DTC VNet"),
    ([torch.zeros(3)], "holds a list"),
    ({"format": "dtc-model", "metadata": "{}", "state_dict": {}}, "already a DTC model file"),
])
def test_import_official_refuses_another_network(tmp_path, content, message):
    pth = tmp_path / "other.pth"
    torch.save(content, pth)
    proc = run_dtc("import-official", pth, "-o", tmp_path / "out.safetensors", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and message in proc.stderr, proc.stderr
    assert not (tmp_path / "out.safetensors").exists()
