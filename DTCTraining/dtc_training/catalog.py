"""The model catalog: the models a user can have without training one (the built-in model shipped with the
extension, and released weights to download), one JSON file read by `dtc models` and by the Slicer
module's Models section. Torch-free.

The catalog is `models.json` beside this file, or the file `$DTC_MODEL_CATALOG` names."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .download import parse_checksum
from .errors import InputError

DEFAULT_CATALOG = Path(__file__).with_name("models.json")
FORMATS = ("dtc-model", "official-dtc-pth")  # a DTC model file as it is; an official state dict to convert
ID = re.compile(r"[a-z0-9][a-z0-9_.-]*")


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    title: str
    description: str
    version: str
    licence: str
    citation: str
    intended_use: str
    format: str = "dtc-model"
    url: Optional[str] = None  # None: shipped with the extension (`file` in its Resources/Models)
    file: Optional[str] = None
    checksum: Optional[str] = None  # "sha256:<hex>" or "git-blob-sha1:<hex>"
    size: Optional[int] = None  # bytes, where known before downloading (a git blob hash fixes it anyway)
    spacing: Optional[list] = None
    source: dict = field(default_factory=dict)  # repository, commit, path: where the file comes from

    @property
    def builtin(self) -> bool:
        return self.url is None

    def provenance(self) -> dict:
        """What a model from this entry records about itself in its metadata."""
        return {"catalog_id": self.id, "title": self.title, "version": self.version, "url": self.url,
                "checksum": self.checksum, "licence": self.licence, "citation": self.citation,
                "intended_use": self.intended_use, **({"source": self.source} if self.source else {})}


def catalog_path() -> Path:
    return Path(os.environ.get("DTC_MODEL_CATALOG") or DEFAULT_CATALOG)


def load_catalog(path: str | os.PathLike | None = None) -> list[CatalogEntry]:
    """The catalog's entries, each checked; an InputError names the file and the entry."""
    path = Path(path) if path else catalog_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable model catalog ({e})") from None
    entries = data.get("models") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise InputError(f"{path}: not a model catalog (no list of \"models\")")
    out, names = [], {f.name for f in CatalogEntry.__dataclass_fields__.values()}
    for i, item in enumerate(entries):
        where = f"{path}: entry {i + 1}"
        if not isinstance(item, dict) or not ID.fullmatch(str(item.get("id", ""))):
            raise InputError(f"{where}: needs an id of lower-case letters, digits, '_', '.' and '-'")
        where = f"{path}: entry {item['id']!r}"
        try:
            entry = CatalogEntry(**{k: v for k, v in item.items() if k in names})
        except TypeError as e:
            raise InputError(f"{where}: {e}") from None
        if entry.format not in FORMATS:
            raise InputError(f"{where}: format {entry.format!r} is not one of {', '.join(FORMATS)}")
        if entry.builtin and not entry.file:
            raise InputError(f"{where}: needs a url to download from, or the file it ships as")
        if not entry.builtin:
            if not re.match(r"https?://", entry.url) or not entry.checksum:
                raise InputError(f"{where}: a download needs an http(s) url and a checksum")
        if entry.checksum:
            try:
                parse_checksum(entry.checksum)
            except ValueError as e:
                raise InputError(f"{where}: {e}") from None
        if any(e.id == entry.id for e in out):
            raise InputError(f"{where}: the id is used twice")
        out.append(entry)
    return out


def find_entry(entry_id: str, path: str | os.PathLike | None = None) -> CatalogEntry:
    entries = load_catalog(path)
    for entry in entries:
        if entry.id == entry_id:
            return entry
    raise InputError(f"no model {entry_id!r} in the catalog {path or catalog_path()} "
                     f"(it has {', '.join(e.id for e in entries) or 'none'})")
