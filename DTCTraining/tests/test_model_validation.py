"""Crafted model files are refused before anything is built or read from them (issue 34): metadata of the
wrong type or out of the architecture's range, tensor tables that do not fit the declared network or the
file, archives that unpack to more than any model holds, non-finite weights. Each refusal names the file
and the field, with exit code 2 and no traceback from `dtc info` and `dtc infer`."""
import json
import math
import struct
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import save as safetensors_bytes

import dtc_training.model_io as model_io
from conftest import run_dtc
from dtc_training.model import DualTaskVNet
from dtc_training.model_io import ModelFileError, load_model, read_metadata, save_model
from dtc_training.model_metadata import expected_shapes

META = {"architecture": "DualTaskVNet", "format_version": 1, "n_filters": 4, "in_channels": 1,
        "patch_size": [32, 32, 16], "spacing": [1.0, 1.0, 1.0], "normalization": "zscore", "k": 1500.0,
        "label_name": "Left atrium"}


def crafted(path, meta, state=None):
    """A safetensors file with any metadata (json allows NaN and Infinity) and by default the tensors of
    the valid 4-filter network."""
    state = DualTaskVNet(n_filters=4).state_dict() if state is None else state
    path.write_bytes(safetensors_bytes({k: v.contiguous() for k, v in state.items()},
                                       metadata={"format": "dtc-model", "metadata": json.dumps(meta)}))
    return path


def raw_safetensors(path, header: dict, data: bytes = b""):
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.fixture
def nothing_built_or_read(monkeypatch):
    """Fails the test if a network is built or a tensor read: a refusal must come before either."""
    def forbidden(*args, **kwargs):
        raise AssertionError("built or read before the file was checked")

    monkeypatch.setattr(model_io, "load_file", forbidden)
    monkeypatch.setattr(model_io, "DualTaskVNet", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)


@pytest.mark.parametrize("field, value, expected", [
    ("n_filters", -3, "not a whole number from 1 to 64"),
    ("n_filters", 0, "not a whole number from 1 to 64"),
    ("n_filters", 100000, "not a whole number from 1 to 64"),
    ("n_filters", "16", "not a whole number"),
    ("n_filters", 4.0, "not a whole number"),
    ("in_channels", 0, "not a whole number from 1 to 16"),
    ("patch_size", [112, 112], "not three multiples of 16"),
    ("patch_size", [100, 112, 80], "not three multiples of 16"),
    ("patch_size", [112, 112, -16], "not three multiples of 16"),
    ("patch_size", [112, 112, 4096], "not three multiples of 16"),
    ("patch_size", "112x112x80", "not three multiples of 16"),
    ("spacing", [0, 1, 1], "not three finite sizes"),
    ("spacing", [math.nan, 1, 1], "not three finite sizes"),
    ("spacing", [1, 1], "not three finite sizes"),
    ("k", 0, "not a finite number"),
    ("k", math.inf, "not a finite number"),
    ("k", "1500", "not a finite number"),
    ("format_version", "1", "not a format number"),
    ("format_version", 1.5, "not a format number"),
    ("format_version", 99, "newer than this dtc_training"),
    ("architecture", "UNet3D", "not 'DualTaskVNet'"),
    ("orientation", "LPX", "three letters naming the axes"),
    ("normalization", "minmax", "knows 'zscore'"),
    ("la_zscore", "whole", "not 'stored' or 'crop'"),
    ("validation_dice", 7, "not a Dice in [0, 1]"),
])
def test_metadata_out_of_range_is_refused_naming_file_and_field(tmp_path, nothing_built_or_read, field, value, expected):
    path = crafted(tmp_path / "crafted.safetensors", {**META, field: value})
    with pytest.raises(ModelFileError) as refusal:
        load_model(path)
    assert f"crafted.safetensors: metadata field {field!r}" in str(refusal.value) and expected in str(refusal.value)


def test_dtc_info_and_infer_refuse_absurd_metadata_with_one_line(tmp_path):
    path = crafted(tmp_path / "crafted.safetensors", {**META, "n_filters": 10**9})
    scan = tmp_path / "scan.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8, 8), np.float32)), str(scan))
    for command in (["info", path], ["infer", "--model", path, scan, "-o", tmp_path / "label.nrrd"]):
        proc = run_dtc(*command, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stdout == "", proc.stderr
        assert "crafted.safetensors: metadata field 'n_filters' is 1000000000" in proc.stderr
    assert not (tmp_path / "label.nrrd").exists()


def test_tensors_of_another_network_are_refused_before_reading_them(tmp_path, nothing_built_or_read):
    wider = {k: v for k, v in DualTaskVNet(n_filters=8).state_dict().items()}
    path = crafted(tmp_path / "wider.safetensors", META, wider)  # declares 4 filters, holds 8
    with pytest.raises(ModelFileError, match=r"wider.safetensors: weights do not fit DualTaskVNet\(in_channels=1, "
                                             r"n_filters=4\): .*of another shape"):
        load_model(path)
    missing = dict(DualTaskVNet(n_filters=4).state_dict())
    del missing["out_conv2.bias"]
    with pytest.raises(ModelFileError, match="1 missing .*out_conv2.bias"):
        load_model(crafted(tmp_path / "missing.safetensors", META, missing))


@pytest.mark.parametrize("entry, expected", [
    ({"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 40000000000]}, "outside the file"),
    ({"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}, "does not hold a F32 tensor"),
    ({"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}, "dtype 'C64'"),
    ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "not a list of sizes"),
])
def test_a_tensor_table_that_does_not_fit_the_file_is_refused_before_allocation(tmp_path, nothing_built_or_read,
                                                                                entry, expected):
    header = {"__metadata__": {"format": "dtc-model", "metadata": json.dumps(META)}, "block_one.conv.0.bias": entry}
    path = raw_safetensors(tmp_path / "table.safetensors", header, bytes(8))
    with pytest.raises(ModelFileError, match=f"table.safetensors: tensor 'block_one.conv.0.bias': .*{expected}"):
        read_metadata(path)


def test_a_header_length_beyond_the_file_is_refused(tmp_path):
    path = tmp_path / "long.safetensors"
    path.write_bytes(struct.pack("<Q", 2**40) + b'{"__metadata__": {}}')
    proc = run_dtc("info", path, check=False)
    assert proc.returncode == 2 and "long.safetensors: not a DTC model file" in proc.stderr


def test_an_archive_that_unpacks_to_more_than_any_model_is_refused_before_reading(tmp_path, nothing_built_or_read):
    # a torch.save-style zip whose one entry declares 3.75 GiB (deflated zeros make such files small)
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/data/0", bytes(2**20))
    data = bytearray(path.read_bytes())
    central = data.rfind(b"PK\x01\x02")  # the last central-directory entry: archive/data/0
    data[central + 24:central + 28] = struct.pack("<I", 0xF0000000)  # its uncompressed size
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"bomb.pt: unpacks to 3840 MiB, more than any DTC model holds"):
        load_model(path)


@pytest.mark.parametrize("kind", ["safetensors", "legacy"])
def test_non_finite_weights_are_refused_at_load_naming_the_tensor(tmp_path, kind):
    state = DualTaskVNet(n_filters=4).state_dict()
    state["block_five.conv.0.weight"][0, 0, 0, 0, 0] = math.nan
    if kind == "safetensors":
        path = crafted(tmp_path / "diverged.safetensors", META, state)
    else:
        path = tmp_path / "diverged.pt"
        torch.save({"format": "dtc-model", "metadata": json.dumps(META), "state_dict": state}, path)
    proc = run_dtc("info", path, check=False) if kind == "legacy" else None
    with pytest.raises(ModelFileError, match=r"non-finite values .* in 'block_five.conv.0.weight'.*lower learning rate"):
        load_model(path)
    if proc is not None:
        assert proc.returncode == 2 and "non-finite" in proc.stderr


def test_non_finite_weights_are_never_written(tmp_path):
    net = DualTaskVNet(n_filters=4)
    with torch.no_grad():
        net.out_conv.bias.fill_(math.inf)
    with pytest.raises(ModelFileError, match="refusing to write weights that hold non-finite values"):
        save_model(tmp_path / "model.safetensors", net, META)
    big = DualTaskVNet(n_filters=4)
    with torch.no_grad():
        big.out_conv.bias.fill_(1e6)  # finite in float32, infinite in fp16
    with pytest.raises(ModelFileError, match="non-finite"):
        save_model(tmp_path / "model.safetensors", big, META, precision="fp16")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("in_channels, n_filters", [(1, 4), (1, 16), (3, 8)])
def test_the_expected_shapes_are_the_networks(in_channels, n_filters):
    state = DualTaskVNet(in_channels=in_channels, n_filters=n_filters).state_dict()
    assert expected_shapes({"in_channels": in_channels, "n_filters": n_filters}) == {
        k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("change, message", [({"n_filters": 65}, "--n-filters must be from 1 to 64"),
                                             ({"patch_size": [528, 112, 80]}, "from 16 to 512")])
def test_a_training_whose_model_no_loader_would_accept_is_refused_before_it_starts(change, message):
    from dtc_training.config import TrainConfig
    from dtc_training.errors import InputError

    with pytest.raises(InputError, match=message):
        TrainConfig(**change).check()
