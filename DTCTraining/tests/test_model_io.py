"""The model file: round trip, refusal of anything that is not plain weights, metadata checks, import of
official DTC state dicts; through the API and the real CLI (`dtc info`, `dtc import-official`)."""
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

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
    return save_model(tmp_path / "model.pt", DualTaskVNet(n_filters=4), META)


def test_round_trip_keeps_weights_and_metadata(model_file):
    net, meta = load_model(model_file)
    assert not net.training
    saved = torch.load(model_file, weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())
    assert meta["architecture"] == "DualTaskVNet" and meta["patch_size"] == [32, 32, 16]
    assert read_metadata(model_file) == meta


def test_a_file_that_would_execute_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "dtc-model", "metadata": json.dumps({}), "state_dict": Payload(marker)}, evil)
    with pytest.raises(ModelFileError, match="refused"):
        load_model(evil)
    proc = run_dtc("info", evil, check=False)
    assert proc.returncode == 2 and "refused" in proc.stderr
    plain_pickle = tmp_path / "evil.pkl"
    plain_pickle.write_bytes(pickle.dumps(Payload(marker)))
    assert run_dtc("infer", "--model", plain_pickle, evil, "-o", tmp_path / "out.nrrd", check=False).returncode == 2
    with pytest.raises(ModelFileError):
        import_official(evil, tmp_path / "imported.pt")
    assert not marker.exists()


def test_truncated_file_is_a_clear_error(model_file):
    data = model_file.read_bytes()
    model_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load_model(model_file)


def _write_image(path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.float32)), str(path))


@pytest.mark.parametrize("name, write", [
    ("empty.pt", lambda p: p.write_bytes(b"")),
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
    for command in (["info", path], ["import-official", path, "-o", tmp_path / "out.pt"]):
        proc = run_dtc(*command, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{name}: not a DTC model file" in proc.stderr
    assert not (tmp_path / "out.pt").exists()


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


@pytest.mark.parametrize("change, message", [
    ({"architecture": "UNet3D"}, "architecture"),
    ({"format_version": 99}, "newer"),
    ({"n_filters": 8}, "do not fit"),
])
def test_metadata_mismatch_is_a_clear_error(tmp_path, change, message):
    path = tmp_path / "model.pt"
    meta = {**META, "architecture": "DualTaskVNet", "format_version": 1, **change}
    state = DualTaskVNet(n_filters=4).state_dict()
    torch.save({"format": "dtc-model", "metadata": json.dumps(meta), "state_dict": state}, path)
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def test_a_model_with_several_input_channels_is_refused_for_inference(tmp_path):
    path = save_model(tmp_path / "two.pt", DualTaskVNet(in_channels=2, n_filters=4), {**META, "in_channels": 2})
    with pytest.raises(ModelFileError, match="2 input channels"):
        Model.load(path, "cpu")


def test_import_official_gives_the_same_network(tmp_path):
    torch.manual_seed(1)
    official = DualTaskVNet(n_filters=4).eval()
    pth = tmp_path / "dtc_16_latest.pth"
    torch.save({f"module.{k}": v for k, v in official.state_dict().items()}, pth)  # a DataParallel checkpoint
    out = tmp_path / "imported.pt"
    proc = run_dtc("import-official", pth, "-o", out, "--spacing", 0.625, 0.625, 0.625)
    assert "wrote" in proc.stdout
    net, meta = load_model(out)
    assert meta["n_filters"] == 4 and meta["patch_size"] == [112, 112, 80] and meta["spacing"] == [0.625] * 3
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
    proc = run_dtc("import-official", pth, "-o", tmp_path / "out.pt", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and message in proc.stderr, proc.stderr
    assert not (tmp_path / "out.pt").exists()
