"""The DTC model file: a safetensors file with the weights and, in its header, the JSON metadata
(`model_metadata`, which reads and checks it without torch). Nothing in it can execute code, and every
field, tensor name, shape and byte range is checked before anything is allocated. Model files of earlier
versions (`torch.save` of the weights and the metadata, `.pt`) still load, weights-only and size-bounded,
and `dtc convert` rewrites them. Also imports official DTC `.pth` files."""
from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from . import __version__
from .files import atomic_write
from .model import DualTaskVNet
from .model_metadata import (ARCHITECTURE, FORMAT, FORMAT_VERSION, MAX_HEADER_BYTES, MAX_WEIGHT_BYTES,
                             ModelFileError, check_metadata, check_shapes, file_kind, is_safetensors, read_header)

__all__ = ["ModelFileError", "save_model", "load_model", "read_metadata", "convert_model", "import_official"]

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
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}


def save_model(path: str | Path, model: torch.nn.Module, metadata: dict, precision: str = "fp32") -> Path:
    """Write `model`'s weights (as `precision`: fp16 halves the file, and loads back as float32) and
    `metadata` as one safetensors model file, atomically."""
    return _write(Path(path), model.state_dict(), metadata, precision)


def _write(path: Path, state: dict, metadata: dict, precision: str = "fp32") -> Path:
    meta = {"architecture": ARCHITECTURE, "format_version": FORMAT_VERSION, "dtc_training_version": __version__,
            **metadata}
    check_metadata(path, meta)
    check_shapes(path, meta, {k: tuple(v.shape) for k, v in state.items()})
    dtype = PRECISIONS[precision]
    tensors = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
               for k, v in state.items()}
    _check_finite(path, tensors, "refusing to write weights that hold")
    data = safetensors_bytes(tensors, metadata={"format": FORMAT, "metadata": json.dumps(meta)})
    return atomic_write(path, lambda f: f.write(data))


def _check_finite(path: Path, state: dict, verb: str = "weights hold") -> None:
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise ModelFileError(f"{path}: {verb} non-finite values (NaN or infinity) in {bad!r}: a training that "
                             "diverged (train again with a lower learning rate)")


def _legacy_load(path: Path) -> object:
    """`torch.load(weights_only=True)` of an earlier model file or an official checkpoint, refused before
    reading when it would unpack to more than any DTC model holds, with every way a file can fail turned
    into a message naming it."""
    if file_kind(path) != "torch":
        raise ModelFileError(f"{path}: not a DTC model file (neither safetensors nor PyTorch's file format)")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                unpacked = sum(entry.file_size for entry in archive.infolist())
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise ModelFileError(f"{path}: not a readable model file (truncated or corrupt?): {e}") from None
    else:
        unpacked = path.stat().st_size
    if unpacked > MAX_WEIGHT_BYTES + MAX_HEADER_BYTES:
        raise ModelFileError(f"{path}: unpacks to {unpacked / 2**20:.0f} MiB, more than any DTC model holds "
                             f"({MAX_WEIGHT_BYTES // 2**20} MiB); refused before reading it")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelFileError(f"{path}: refused to load: the file holds objects other than weights "
                             f"({_unpickler_reason(e)})") from None
    except Exception as e:  # the unpickler and zip reader fail in many ways on damaged files
        raise ModelFileError(f"{path}: not a readable model file (truncated or corrupt?): {type(e).__name__}: {e}") from None


def _unpickler_reason(error: Exception) -> str:
    """The line of torch's weights-only refusal that says what was refused (e.g. "Trying to load unsupported
    GLOBAL posix.system ..."), not its boilerplate about the `weights_only` default."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue", "You can use")
    reasons = [line for line in lines if not line.startswith(boilerplate)]
    return (reasons or lines or [type(error).__name__])[0]


def _tensors_only(path: Path, state: object, what: str) -> dict:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: {what} (it holds a {type(state).__name__}, not a mapping of names to tensors)")
    return state


def _read(path: Path) -> tuple[dict, dict]:
    """(metadata, float32 state dict), every check done: metadata fields, tensor names and shapes against
    the declared architecture (before a tensor is read, for safetensors files), finite values."""
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    if is_safetensors(path):
        meta, _ = read_header(path)
        try:
            state = load_file(path)
        except Exception as e:  # checked above, so only a file changed or damaged under us gets here
            raise ModelFileError(f"{path}: not a readable model file (truncated or corrupt?): {e}") from None
    else:
        obj = _legacy_load(path)
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ModelFileError(f"{path}: not a DTC model file (for an official DTC .pth use `dtc import-official`)")
        try:
            meta = json.loads(obj.get("metadata"))
        except (TypeError, ValueError):
            meta = None
        if not isinstance(meta, dict) or not isinstance(obj.get("state_dict"), dict):
            raise ModelFileError(f"{path}: damaged DTC model file: its metadata or weights are missing")
        check_metadata(path, meta)
        state = _tensors_only(path, obj["state_dict"], "damaged DTC model file: its weights are not tensors")
        check_shapes(path, meta, {k: tuple(v.shape) for k, v in state.items()})
    _check_finite(path, state)
    return meta, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def read_metadata(path: str | Path) -> dict:
    """A model file's checked metadata: from the header alone for a safetensors file (no weights read)."""
    path = Path(path)
    if path.is_file() and is_safetensors(path):
        return read_header(path)[0]
    return _read(path)[0]


def build_network(meta: dict, has_dropout: bool = False) -> DualTaskVNet:
    return DualTaskVNet(in_channels=meta["in_channels"], n_filters=meta["n_filters"], has_dropout=has_dropout)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[DualTaskVNet, dict]:
    """Return the network in eval mode on `device` and its metadata."""
    meta, state = _read(Path(path))
    net = build_network(meta)
    net.load_state_dict(state)
    return net.to(device).eval(), meta


def convert_model(source: str | Path, out: str | Path, precision: str = "fp32", extra: dict | None = None) -> Path:
    """Rewrite a model file (e.g. an earlier `.pt`) as a safetensors model file, its metadata kept and
    `extra` merged in."""
    meta, state = _read(Path(source))
    return _write(Path(out), state, {**meta, **(extra or {})}, precision)


def import_official(pth: str | Path, out: str | Path, **metadata) -> Path:
    """Convert an official DTC state dict (`vnet_sdf.VNet`) into a DTC model file."""
    pth = Path(pth)
    if not pth.is_file():
        raise ModelFileError(f"{pth}: model file not found")
    if is_safetensors(pth):
        read_header(pth)  # says what is wrong with it, or:
        raise ModelFileError(f"{pth}: already a DTC model file; use it as it is")
    state = _legacy_load(pth)
    if isinstance(state, dict) and state.get("format") == FORMAT:
        raise ModelFileError(f"{pth}: already a DTC model file; use it as it is (`dtc convert` rewrites it)")
    state = _tensors_only(pth, state, "not an official DTC VNet state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel checkpoints
    meta = {**OFFICIAL_LA_METADATA, **metadata}
    first = state.get("block_one.conv.0.weight")
    if first is not None and first.dim() == 5:
        meta["n_filters"], meta["in_channels"] = int(first.shape[0]), int(first.shape[1])
    check_shapes(pth, meta, {k: tuple(v.shape) for k, v in state.items()}, "the official DTC VNet")
    _check_finite(pth, state)
    return _write(Path(out), state, meta)
