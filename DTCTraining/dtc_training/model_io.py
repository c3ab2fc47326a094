"""The DTC model file: one `.pt` file holding the weights and a JSON metadata string, loaded with
`torch.load(weights_only=True)` so a file can never execute code. Also imports official DTC `.pth` files."""
from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import torch

from . import __version__
from .errors import InputError
from .files import atomic_torch_save
from .model import ARCHITECTURE, DualTaskVNet

FORMAT = "dtc-model"
FORMAT_VERSION = 1

# What the official LA model was trained on (reference sections 5-6), used when importing its .pth files.
OFFICIAL_LA_METADATA = {
    "n_filters": 16,
    "in_channels": 1,
    "patch_size": [112, 112, 80],
    "spacing": [0.625, 0.625, 0.625],
    "normalization": "zscore",
    "k": 1500.0,
    "label_name": "Left atrium",
    "data": {"source": "official DTC checkpoint (LA, UA-MT h5 layout)"},
}


class ModelFileError(InputError):
    pass


def save_model(path: str | Path, model: torch.nn.Module, metadata: dict) -> Path:
    meta = {
        "architecture": ARCHITECTURE,
        "format_version": FORMAT_VERSION,
        "dtc_training_version": __version__,
        **metadata,
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_torch_save({"format": FORMAT, "metadata": json.dumps(meta), "state_dict": state}, path)


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelFileError(f"{path}: refused to load: the file holds objects other than weights ({e})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise ModelFileError(f"{path}: not a readable model file (truncated or corrupt?): {e}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ModelFileError(
            f"{path}: not a DTC model file (for an official DTC .pth use `dtc import-official`)"
        )
    return obj


def read_metadata(path: str | Path) -> dict:
    meta = json.loads(_read(Path(path))["metadata"])
    _check_metadata(Path(path), meta)
    return meta


def _check_metadata(path: Path, meta: dict) -> None:
    if meta.get("architecture") != ARCHITECTURE:
        raise ModelFileError(f"{path}: architecture {meta.get('architecture')!r} is not {ARCHITECTURE!r}")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format {meta['format_version']} is newer than this dtc_training "
            f"({__version__}) reads ({FORMAT_VERSION}); update dtc_training"
        )
    for key in ("n_filters", "in_channels", "patch_size", "k"):
        if key not in meta:
            raise ModelFileError(f"{path}: metadata lacks {key!r}")


def build_network(meta: dict, has_dropout: bool = False) -> DualTaskVNet:
    return DualTaskVNet(in_channels=meta["in_channels"], n_filters=meta["n_filters"], has_dropout=has_dropout)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[DualTaskVNet, dict]:
    """Return the network in eval mode on `device` and its metadata."""
    path = Path(path)
    obj = _read(path)
    meta = json.loads(obj["metadata"])
    _check_metadata(path, meta)
    net = build_network(meta)
    try:
        net.load_state_dict(obj["state_dict"])
    except RuntimeError as e:
        raise ModelFileError(f"{path}: weights do not fit {ARCHITECTURE}(n_filters={meta['n_filters']}): {e}") from None
    return net.to(device).eval(), meta


def import_official(pth: str | Path, out: str | Path, **metadata) -> Path:
    """Convert an official DTC state dict (`vnet_sdf.VNet`) into a DTC model file."""
    pth = Path(pth)
    try:
        state = torch.load(pth, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise ModelFileError(f"{pth}: not a loadable weights-only state dict: {e}") from None
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel checkpoints
    meta = {**OFFICIAL_LA_METADATA, **metadata}
    if "block_one.conv.0.weight" in state:
        meta["n_filters"] = int(state["block_one.conv.0.weight"].shape[0])
    net = build_network(meta)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ModelFileError(f"{pth}: not an official DTC VNet state dict: {e}") from None
    return save_model(out, net, meta)
