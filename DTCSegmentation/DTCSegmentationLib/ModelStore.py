"""The model store: one folder per model under a user folder, each holding `model.pt` and a cached
`metadata.json` (the model's own metadata plus store fields), so listing needs no torch.

Folder: `$DTC_MODEL_STORE`, else `~/.dtcsegmentation/models`.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional


class ModelStoreError(ValueError):
    pass


NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # what uniqueName() makes of any base name


def _replaceAtomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write` fills a temporary sibling, synced and then renamed over `path`: a crash or a full disk leaves
    the old file or none, never part of one. The backend's own writer (imported here, so that the module
    loads and can say what is missing where the backend is not installed)."""
    from dtc_training.files import atomic_write_named

    atomic_write_named(path, write)


def defaultRoot() -> Path:
    env = os.environ.get("DTC_MODEL_STORE")
    return Path(env) if env else Path.home() / ".dtcsegmentation" / "models"


def readModelMetadata(path: str | os.PathLike) -> dict:
    """The model file's metadata; `ModelStoreError` for a file that is not a DTC model (other kinds of
    networks, official .pth files, corrupt files)."""
    try:
        from dtc_training.model_io import ModelFileError, read_metadata
    except ImportError as e:
        raise ModelStoreError(f"cannot read models: the DTC backend is not installed ({e})") from None
    try:
        return read_metadata(path)
    except ModelFileError as e:
        raise ModelStoreError(str(e)) from None
    except Exception as e:  # torch.load on arbitrary bytes can raise almost anything
        raise ModelStoreError(f"{path}: not a DTC model file ({type(e).__name__}: {e})") from None


@dataclass
class ModelInfo:
    name: str
    folder: Path
    metadata: dict

    @property
    def path(self) -> Path:
        return self.folder / "model.pt"

    def summary(self) -> str:
        m = self.metadata
        parts = [f"n_filters {m.get('n_filters')}", f"patch {tuple(m.get('patch_size', ()))}"]
        if m.get("spacing"):
            parts.append(f"spacing {tuple(m['spacing'])}")
        if m.get("iterations") or m.get("training", {}).get("iterations"):
            parts.append(f"{m.get('iterations') or m['training']['iterations']} iterations")
        dice = m.get("validation_dice", m.get("val_dice"))
        if dice is not None:
            parts.append(f"val Dice {float(dice):.3f}")
        parts.append(f"dtc_training {m.get('dtc_training_version', '?')}")
        return ", ".join(parts)


class ModelStore:
    def __init__(self, root: Optional[str | os.PathLike] = None):
        self.root = Path(root) if root else defaultRoot()

    def list(self) -> list[ModelInfo]:
        if not self.root.is_dir():
            return []
        out = []
        for folder in sorted(self.root.iterdir()):
            meta = folder / "metadata.json"
            if folder.name.startswith(".") or not (folder / "model.pt").is_file():
                continue  # an import in progress (or cut short) or something else
            try:
                out.append(ModelInfo(folder.name, folder, json.loads(meta.read_text(encoding="utf-8"))))
            except (OSError, ValueError):  # no metadata, or deleted while listing
                continue
        return out

    def get(self, name: str) -> ModelInfo:
        for info in self.list():
            if info.name == name:
                return info
        raise ModelStoreError(f"no model named {name!r} in {self.root}")

    def uniqueName(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.") or "model"
        name, n = base, 2
        while (self.root / name).exists():
            name, n = f"{base}-{n}", n + 1
        return name

    def importModel(self, path: str | os.PathLike, name: Optional[str] = None, extra: Optional[dict] = None) -> ModelInfo:
        """Copy a DTC model file into the store; refuses files that are not DTC models."""
        path = Path(path)
        metadata = readModelMetadata(path)  # raises for another kind of model
        self.root.mkdir(parents=True, exist_ok=True)
        base = name or (path.parent.name if path.name == "model.pt" else path.stem)
        # Assembled in a hidden folder and renamed into place: a crash leaves no half model in the list, and
        # an import racing for the same name (the panel and a batch run) makes the rename fail, not overwrite.
        staging = Path(tempfile.mkdtemp(prefix=".import-", dir=self.root))
        try:
            shutil.copy2(path, staging / "model.pt")
            while True:
                name = self.uniqueName(base)
                metadata = {**metadata, **(extra or {}), "store": {
                    "name": name, "source": str(path.resolve()),
                    "added": datetime.datetime.now().isoformat(timespec="seconds")}}
                (staging / "metadata.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
                try:
                    os.rename(staging, self.root / name)
                    return ModelInfo(name, self.root / name, metadata)
                except OSError:
                    if not (self.root / name).exists():
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def rename(self, name: str, newName: str) -> ModelInfo:
        """Give a stored model another name; refuses a name in use or one that is not a plain folder name."""
        info = self.get(name)
        if not NAME.fullmatch(newName):
            raise ModelStoreError(f"{newName!r}: a model name holds only letters, digits, '_', '.' and '-'")
        target = self.root / newName
        if target.exists():
            raise ModelStoreError(f"a model named {newName!r} is already in {self.root}")
        os.rename(info.folder, target)  # listed under one name or the other, never neither
        metadata = {**info.metadata, "store": {**info.metadata.get("store", {}), "name": newName}}
        _replaceAtomically(target / "metadata.json",
                           lambda tmp: tmp.write_text(json.dumps(metadata, indent=2), encoding="utf-8"))
        return ModelInfo(newName, target, metadata)

    def export(self, name: str, destination: str | os.PathLike) -> Path:
        """Copy a stored model's file to `destination` (a file, or a folder to hold `<name>.pt`): one file
        with the weights and the metadata, which `dtc` and another model store load as it is."""
        info, destination = self.get(name), Path(destination)
        if destination.is_dir():
            destination = destination / f"{name}.pt"
        _replaceAtomically(destination, lambda tmp: shutil.copyfile(info.path, tmp))
        return destination

    def delete(self, name: str) -> None:
        info = self.get(name)
        shutil.rmtree(info.folder)

    def resolve(self, nameOrPath: str | os.PathLike) -> Path:
        """A model file path from a store name or a path."""
        path = Path(nameOrPath)
        if path.is_file():
            return path.resolve()  # the child process runs in another folder
        return self.get(str(nameOrPath)).path
