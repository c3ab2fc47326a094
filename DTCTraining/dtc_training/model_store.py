"""The model store, shared by the Slicer module and `dtc models`: one folder per model under a user folder,
each holding `model.safetensors` and a cached `metadata.json` (the model's metadata plus store fields),
and the built-in models shipped with the extension, listed first, read-only. Torch-free: the Slicer
process lists, imports, exports and chooses models without importing torch; what needs torch (converting
a `.pt` of an earlier version, a downloaded official checkpoint) runs in a `dtc` child. Its method names
are the Slicer module's, its main user.

Folders: the store is `$DTC_MODEL_STORE`, else `~/.dtcsegmentation/models`; the built-in models are the
`*.safetensors` files of `$DTC_BUILTIN_MODELS`, else of the extension's `Resources/Models` (beside the
bundled backend in an installed extension, at the top of a source checkout).
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .catalog import CatalogEntry, find_entry
from .download import download
from .files import atomic_write_named
from .model_metadata import ModelFileError, file_kind, is_safetensors, read_metadata

MODEL_FILE = "model.safetensors"
LEGACY_MODEL_FILE = "model.pt"  # what store folders of earlier versions hold; they still list and segment
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # what uniqueName() makes of any base name
CHILD_TIMEOUT_S = 600


class ModelStoreError(ValueError):
    pass


def defaultRoot() -> Path:
    env = os.environ.get("DTC_MODEL_STORE")
    return Path(env) if env else Path.home() / ".dtcsegmentation" / "models"


def builtinFolder() -> Optional[Path]:
    if "DTC_BUILTIN_MODELS" in os.environ:
        return Path(os.environ["DTC_BUILTIN_MODELS"]) if os.environ["DTC_BUILTIN_MODELS"] else None
    package = Path(__file__).resolve().parent
    return next((folder for folder in (package.parent / "Resources" / "Models",
                                       package.parent.parent / "Resources" / "Models") if folder.is_dir()), None)


@dataclass
class ModelInfo:
    name: str
    folder: Path
    metadata: dict
    builtin: bool = False
    file: Optional[Path] = None  # a built-in model's file; a stored model's is in its folder

    @property
    def path(self) -> Path:
        if self.file is not None:
            return self.file
        legacy = self.folder / LEGACY_MODEL_FILE
        return legacy if legacy.is_file() and not (self.folder / MODEL_FILE).is_file() else self.folder / MODEL_FILE

    def summary(self) -> str:
        m = self.metadata
        parts = ["built-in"] if self.builtin else []
        parts += [f"n_filters {m.get('n_filters')}", f"patch {tuple(m.get('patch_size', ()))}"]
        if m.get("spacing"):
            parts.append(f"spacing {tuple(m['spacing'])}")
        if m.get("iterations") or m.get("training", {}).get("iterations"):
            parts.append(f"{m.get('iterations') or m['training']['iterations']} iterations")
        dice = m.get("validation_dice", m.get("val_dice"))
        if dice is not None:
            parts.append(f"val Dice {float(dice):.3f}")
        if m.get("provenance", {}).get("version"):
            parts.append(f"version {m['provenance']['version']}")
        parts.append(f"dtc_training {m.get('dtc_training_version', '?')}")
        return ", ".join(parts)

    def details(self) -> str:
        """Where the model comes from, for a user who has to decide whether to trust it: its provenance
        (training data, recipe, score, intended use, licence), else what its metadata says of its data."""
        m = self.metadata
        about = m.get("provenance") or {"data": m.get("data"), "created": m.get("created")}
        lines = [f"{key.replace('_', ' ')}: {_text(value)}" for key, value in about.items() if value not in (None, "", {})]
        return "\n".join([self.summary(), *lines])


def _text(value) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k.replace('_', ' ')} {_text(v)}" for k, v in value.items() if v not in (None, ""))
    if isinstance(value, list):
        return ", ".join(map(_text, value))
    return str(value)


class ModelStore:
    def __init__(self, root: Optional[str | os.PathLike] = None, builtin: Optional[str | os.PathLike] = None,
                 python: Optional[str] = None, env: Optional[dict] = None):
        """`builtin`: the folder of built-in models (default `builtinFolder()`); `python` and `env`: how to
        start the `dtc` children that convert models (default: this Python and environment)."""
        self.root = Path(root) if root else defaultRoot()
        self.builtin = Path(builtin) if builtin else builtinFolder()
        self.python, self.env = python or sys.executable, env

    # ------------------------------------------------------------------------------------ listing
    def builtins(self) -> list[ModelInfo]:
        if self.builtin is None or not self.builtin.is_dir():
            return []
        out = []
        for file in sorted(self.builtin.glob("*.safetensors")):
            try:
                out.append(ModelInfo(file.stem, self.builtin, read_metadata(file), builtin=True, file=file))
            except ModelFileError:  # a damaged installation: `dtc info` on the file says why
                continue
        return out

    def list(self) -> list[ModelInfo]:
        """The built-in models, then the stored ones, by name."""
        out = self.builtins()
        if not self.root.is_dir():
            return out
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not any((folder / f).is_file() for f in (MODEL_FILE, LEGACY_MODEL_FILE)):
                continue  # an import or download in progress (or cut short), or something else
            try:
                out.append(ModelInfo(folder.name, folder, json.loads((folder / "metadata.json").read_text(encoding="utf-8"))))
            except (OSError, ValueError):  # no metadata, or deleted while listing
                continue
        return out

    def default(self) -> Optional[str]:
        """The model a first start chooses: the built-in one, else the first stored one."""
        models = self.list()
        return models[0].name if models else None

    def get(self, name: str) -> ModelInfo:
        for info in self.list():
            if info.name == name:
                return info
        raise ModelStoreError(f"no model named {name!r} in {self.root}")

    def resolve(self, nameOrPath: str | os.PathLike) -> Path:
        """A model file path from a store name or a path."""
        path = Path(nameOrPath)
        if path.is_file():
            return path.resolve()  # the child process runs in another folder
        return self.get(str(nameOrPath)).path

    def uniqueName(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.") or "model"
        taken = {info.name for info in self.builtins()}
        name, n = base, 2
        while name in taken or (self.root / name).exists():
            name, n = f"{base}-{n}", n + 1
        return name

    # ------------------------------------------------------------------------------- reading files
    def readMetadata(self, path: str | os.PathLike) -> dict:
        """A model file's checked metadata: from a safetensors header here, without torch; a `.pt` of an
        earlier version is read by a `dtc info` child. ModelStoreError for anything else."""
        path = Path(path)
        if not path.is_file():
            raise ModelStoreError(f"{path}: model file not found")
        try:
            kind = file_kind(path)
            if kind == "safetensors":
                return read_metadata(path)
        except (ModelFileError, OSError) as e:
            raise ModelStoreError(str(e) if isinstance(e, ModelFileError) else f"{path}: {e.strerror or e}") from None
        if kind is None:
            raise ModelStoreError(f"{path}: not a DTC model file (neither safetensors nor PyTorch's file format)")
        return json.loads(self._dtc("info", str(path), "--json"))

    def _dtc(self, *args: str) -> str:
        """Run `dtc ARGS` in a child; its output, or ModelStoreError with its message."""
        try:
            proc = subprocess.run([self.python, "-m", "dtc_training", *args], capture_output=True, text=True,
                                  encoding="utf-8", errors="replace", env=self.env, timeout=CHILD_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ModelStoreError(f"could not run dtc {args[0]} ({e})") from None
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            message = next((line.split(": error: ", 1)[1] for line in lines if ": error: " in line),
                           lines[-1] if lines else f"exit code {proc.returncode}")
            raise ModelStoreError(message)
        return proc.stdout

    # ------------------------------------------------------------------------------ adding models
    def importModel(self, path: str | os.PathLike, name: Optional[str] = None, extra: Optional[dict] = None) -> ModelInfo:
        """Copy a DTC model file into the store (a `.pt` of an earlier version is converted); refuses files
        that are not DTC models."""
        path = Path(path)
        base = name or (path.parent.name if path.name in (MODEL_FILE, LEGACY_MODEL_FILE) else path.stem)
        if not path.is_file():
            raise ModelStoreError(f"{path}: model file not found")
        if is_safetensors(path):
            return self._add(base, lambda target: shutil.copy2(path, target), {"source": str(path.resolve())}, extra)
        if file_kind(path) is None:
            raise ModelStoreError(f"{path}: not a DTC model file (neither safetensors nor PyTorch's file format)")
        return self._add(base, lambda target: self._dtc("convert", str(path), "-o", str(target)),
                         {"source": str(path.resolve()), "converted_from": "model file of an earlier version"}, extra)

    def _add(self, base: str, write: Callable[[Path], object], store: dict, extra: Optional[dict]) -> ModelInfo:
        """Assembled in a hidden folder and renamed into place: a crash leaves no half model in the list, and
        an import racing for the same name (the panel and a batch run) makes the rename fail, not overwrite."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".import-", dir=self.root))
        try:
            write(staging / MODEL_FILE)
            try:
                metadata = read_metadata(staging / MODEL_FILE)
            except ModelFileError as e:
                raise ModelStoreError(str(e)) from None
            while True:
                name = self.uniqueName(base)
                metadata = {**metadata, **(extra or {}), "store": {
                    "name": name, **store, "added": datetime.datetime.now().isoformat(timespec="seconds")}}
                (staging / "metadata.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
                try:
                    os.rename(staging, self.root / name)
                    return ModelInfo(name, self.root / name, metadata)
                except OSError:
                    if not (self.root / name).exists():
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def installed(self, entry: CatalogEntry) -> Optional[ModelInfo]:
        """The stored (or built-in) model of this catalog entry at its version, if there is one."""
        for info in self.list():
            provenance = info.metadata.get("provenance", {})
            if (info.builtin and entry.builtin and info.file.name == entry.file) or (
                    provenance.get("catalog_id") == entry.id and provenance.get("version") == entry.version):
                return info
        return None

    def pull(self, entry: CatalogEntry | str, progress: Optional[Callable[[int, Optional[int]], None]] = None,
             cancelled: Optional[Callable[[], bool]] = None, onConverting: Optional[Callable[[], None]] = None) -> ModelInfo:
        """Download a catalog model, verify it, convert it where it is an official checkpoint (in a `dtc
        import-official` child) and add it to the store with its provenance and licence. The partial
        download waits in the store's hidden `.downloads` folder for the next try to resume."""
        if isinstance(entry, str):
            entry = find_entry(entry)
        known = self.installed(entry)
        if known is not None:
            return known
        if entry.builtin:
            raise ModelStoreError(f"{entry.id} is built into the extension, and this installation lacks its file "
                                  f"{entry.file} (in {self.builtin or 'Resources/Models'})")
        suffix = Path(entry.url).suffix or ".bin"
        raw = download(entry.url, self.root / ".downloads" / f"{entry.id}{suffix}", entry.checksum, entry.size,
                       progress, cancelled)
        if onConverting:
            onConverting()
        extra = {"provenance": entry.provenance()}
        store = {"source": entry.url}
        try:
            if entry.format == "dtc-model":
                info = self._add(entry.id, lambda target: shutil.copyfile(raw, target), store, extra)
            else:
                with tempfile.TemporaryDirectory(dir=self.root, prefix=".provenance-") as folder:
                    fields = Path(folder) / "provenance.json"
                    fields.write_text(json.dumps(extra), encoding="utf-8")
                    info = self._add(entry.id, lambda target: self._dtc(
                        "import-official", str(raw), "-o", str(target), "--metadata", str(fields)), store, None)
        except ModelStoreError:
            raw.unlink(missing_ok=True)  # verified but not a usable model: the next try downloads it afresh
            raise
        raw.unlink(missing_ok=True)
        return info

    # ------------------------------------------------------------------------- changing models
    def _own(self, name: str, action: str) -> ModelInfo:
        info = self.get(name)
        if info.builtin:
            raise ModelStoreError(f"{name!r} is the built-in model, which cannot be {action} (export it to keep "
                                  "a copy of your own)")
        return info

    def rename(self, name: str, newName: str) -> ModelInfo:
        """Give a stored model another name; refuses a name in use or one that is not a plain folder name."""
        info = self._own(name, "renamed")
        if not NAME.fullmatch(newName):
            raise ModelStoreError(f"{newName!r}: a model name holds only letters, digits, '_', '.' and '-'")
        target = self.root / newName
        if target.exists() or newName in {b.name for b in self.builtins()}:
            raise ModelStoreError(f"a model named {newName!r} is already in {self.root}")
        os.rename(info.folder, target)  # listed under one name or the other, never neither
        metadata = {**info.metadata, "store": {**info.metadata.get("store", {}), "name": newName}}
        atomic_write_named(target / "metadata.json",
                           lambda tmp: tmp.write_text(json.dumps(metadata, indent=2), encoding="utf-8"))
        return ModelInfo(newName, target, metadata)

    def export(self, name: str, destination: str | os.PathLike) -> Path:
        """Copy a model's file to `destination` (a file, or a folder to hold `<name>.safetensors`): one file
        with the weights and the metadata, which `dtc` and another model store load as it is."""
        info, destination = self.get(name), Path(destination)
        if destination.is_dir():
            destination = destination / f"{name}{info.path.suffix}"
        atomic_write_named(destination, lambda tmp: shutil.copyfile(info.path, tmp))
        return destination

    def delete(self, name: str) -> None:
        shutil.rmtree(self._own(name, "deleted").folder)
