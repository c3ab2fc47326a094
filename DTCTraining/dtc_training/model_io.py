"""The DTC model file: one `.pt` file holding the weights and a JSON metadata string, loaded with
`torch.load(weights_only=True)` so a file can never execute code. Also imports official DTC `.pth` files."""
from __future__ import annotations

import json
import pickle
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


def _torch_load(path: Path) -> object:
    """`torch.load(weights_only=True)`, with every way a file can fail turned into a message naming it."""
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    with path.open("rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive; files from torch < 1.6 are a bare pickle (protocol 2+ opens with 0x80).
    # Anything else (an image, JSON, text) is not worth handing to the unpickler.
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise ModelFileError(f"{path}: not a DTC model file (not in PyTorch's file format)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = next((line.strip() for line in str(e).splitlines() if "WeightsUnpickler error" in line),
                      str(e).splitlines()[0] if str(e) else "")
        raise ModelFileError(f"{path}: refused to load: the file holds objects other than weights ({reason})") from None
    except Exception as e:  # the unpickler and zip reader fail in many ways on damaged files
        raise ModelFileError(f"{path}: not a readable model file (truncated or corrupt?): {type(e).__name__}: {e}") from None


def _read(path: Path) -> dict:
    obj = _torch_load(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ModelFileError(
            f"{path}: not a DTC model file (for an official DTC .pth use `dtc import-official`)"
        )
    try:
        meta = json.loads(obj.get("metadata"))
    except (TypeError, ValueError):
        meta = None
    if not isinstance(meta, dict) or not isinstance(obj.get("state_dict"), dict):
        raise ModelFileError(f"{path}: damaged DTC model file: its metadata or weights are missing")
    return {"metadata": meta, "state_dict": obj["state_dict"]}


def _load_weights(net: torch.nn.Module, state: dict, path: Path, expected: str) -> None:
    """Load `state` into `net`, or say briefly how it differs (torch's own message lists every key)."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshapen = [k for k in own if k in state and getattr(state[k], "shape", None) != own[k].shape]
    problems = [f"{len(keys)} {what} (e.g. {keys[0]!r})"
                for keys, what in ((missing, "missing"), (unexpected, "unexpected"), (misshapen, "of another shape"))
                if keys]
    if problems:
        raise ModelFileError(f"{path}: weights do not fit {expected}: {', '.join(problems)}")
    net.load_state_dict(state)


def read_metadata(path: str | Path) -> dict:
    meta = _read(Path(path))["metadata"]
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
    meta = obj["metadata"]
    _check_metadata(path, meta)
    net = build_network(meta)
    _load_weights(net, obj["state_dict"], path, f"{ARCHITECTURE}(n_filters={meta['n_filters']})")
    return net.to(device).eval(), meta


def import_official(pth: str | Path, out: str | Path, **metadata) -> Path:
    """Convert an official DTC state dict (`vnet_sdf.VNet`) into a DTC model file."""
    pth = Path(pth)
    state = _torch_load(pth)
    if isinstance(state, dict) and state.get("format") == FORMAT:
        raise ModelFileError(f"{pth}: already a DTC model file; use it as it is")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{pth}: not an official DTC VNet state dict (it holds a {type(state).__name__}, "
                             "not a mapping of names to tensors)")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel checkpoints
    meta = {**OFFICIAL_LA_METADATA, **metadata}
    if "block_one.conv.0.weight" in state:
        meta["n_filters"] = int(state["block_one.conv.0.weight"].shape[0])
    net = build_network(meta)
    _load_weights(net, state, pth, f"the official DTC VNet (n_filters={meta['n_filters']})")
    return save_model(out, net, meta)
