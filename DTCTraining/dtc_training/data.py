"""Training data: a MONAI decathlon-style datalist of files, or the UA-MT h5 layout of the LA data.
Every case is read, checked and preprocessed up front, so all problems are reported at once, each
naming its file, before any training starts."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from . import la, volumes
from .errors import InputError


@dataclass
class TrainingData:
    labeled: list[dict]  # {"name", "image", "label"}: float32 / uint8 arrays, (x, y, z)
    unlabeled: list[dict]  # {"name", "image"}
    validation: list[dict] = field(default_factory=list)
    spacing: list[float] | None = None
    source: str = ""
    selection: dict | None = None  # LA layout: the --labeled, --unlabeled and --holdout counts chosen

    def summary(self) -> dict:
        counts = {"labeled": len(self.labeled), "unlabeled": len(self.unlabeled), "validation": len(self.validation)}
        return {"source": self.source, **counts, **({"selection": self.selection} if self.selection else {})}


def _entries(raw: dict, key: str, base: Path, with_label: bool, where: Path) -> list[dict]:
    items = raw.get(key, [])
    if not isinstance(items, list):
        raise InputError(f"{where}: {key!r} must be a list of entries, not {type(items).__name__}")
    need = '{"image": "path", "label": "path"}' if with_label else '{"image": "path"} or a path'
    entries = []
    for i, item in enumerate(items):
        item = {"image": item} if isinstance(item, str) else item
        fields = ("image", "label") if with_label else ("image",)
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) and item[k] for k in fields):
            raise InputError(f"{where}: entry {i} of {key!r} must be {need}, not {json.dumps(item)}")
        entries.append({k: str((base / item[k]).resolve()) for k in fields})
    return entries


def read_datalist(path: str | Path) -> dict[str, list[dict]]:
    """{"labeled", "unlabeled", "validation"} lists of file entries, paths resolved against the file's folder."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))  # JSON is UTF-8; Notepad adds a BOM
    except FileNotFoundError:
        raise InputError(f"{path}: datalist not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable JSON datalist ({e})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a datalist is a JSON object with lists under \"labeled\" (or \"training\"), "
                         f"\"unlabeled\" and \"validation\", not a {type(raw).__name__}")
    base = path.parent
    labeled = _entries(raw, "labeled", base, True, path) + _entries(raw, "training", base, True, path)
    return {"labeled": labeled, "unlabeled": _entries(raw, "unlabeled", base, False, path),
            "validation": _entries(raw, "validation", base, True, path)}


def _binary_label(label: np.ndarray, foreground: float | None, name: str) -> np.ndarray:
    values = np.unique(label)
    if foreground is None:
        nonzero = values[values != 0]
        if len(nonzero) > 1:
            raise InputError(f"{name}: label has several foreground values [{', '.join(f'{v:g}' for v in nonzero[:8])}]; "
                             "choose one with --foreground-value")
        mask = label != 0
    else:
        if foreground not in values:
            warnings.warn(f"{name}: no voxel has the foreground value {foreground}")
        mask = label == foreground
    if not mask.any():
        warnings.warn(f"{name}: label has no foreground; its level-set target is zero, as in the official code")
    return mask.astype(np.uint8)


def _grid_differences(image: sitk.Image, label: sitk.Image) -> list[str]:
    """How the label's voxel grid differs from its image's (empty: the same grid)."""
    checks = [  # name, image's, label's, relative and absolute tolerance
        ("size", image.GetSize(), label.GetSize(), 0, 0),
        ("spacing", image.GetSpacing(), label.GetSpacing(), 1e-4, 0),
        ("origin", image.GetOrigin(), label.GetOrigin(), 0, 1e-3),
        ("direction", image.GetDirection(), label.GetDirection(), 0, 1e-4),
    ]
    fmt = lambda values: "(" + ", ".join(f"{v:g}" for v in values) + ")"
    return [f"{name} {fmt(theirs)} against the image's {fmt(ours)}" for name, ours, theirs, rtol, atol in checks
            if len(ours) != len(theirs) or not np.allclose(ours, theirs, rtol=rtol, atol=atol)]


def load_case(entry: dict, spacing: Sequence[float] | None, foreground: float | None) -> dict:
    image_file = Path(entry["image"])
    image = volumes.read_image(image_file)
    array, grid = volumes.preprocess(image, spacing, image_file)
    case = {"name": image_file.name, "image": array}
    if "label" in entry:
        label_file = Path(entry["label"])
        label = volumes.read_image(label_file)
        differences = _grid_differences(image, label)
        if differences:
            raise InputError(f"{label_file}: label geometry differs from its image {image_file}: "
                             f"{'; '.join(differences)}; resample it onto the image grid")
        if grid is not image:
            label = volumes.resample_like(label, grid, label=True)
        case["label"] = _binary_label(volumes.to_array(label, label_file, dtype=np.float64), foreground,
                                      str(label_file))
    return case


def _overlaps(entries: dict[str, list[dict]]) -> list[str]:
    groups: dict[str, list[str]] = {}
    for group, items in entries.items():
        for entry in items:
            groups.setdefault(entry["image"], []).append(group)
    return [f"{image}: listed both as {' and as '.join(g)}" for image, g in groups.items() if len(g) > 1]


def load_files(entries: dict[str, list[dict]], spacing, foreground, source: str) -> TrainingData:
    """Every case read and checked; all problems (overlaps, missing files, bad volumes) raised together."""
    problems = _overlaps(entries)
    loaded = {}
    for group, items in entries.items():
        loaded[group] = []
        for entry in items:
            missing = [p for p in entry.values() if not Path(p).exists()]
            if missing:
                problems += [f"{p}: file not found" for p in missing]
                continue
            try:
                loaded[group].append(load_case(entry, spacing, foreground))
            except InputError as e:
                problems += e.problems
    if problems:
        raise InputError(problems)
    return TrainingData(loaded["labeled"], loaded["unlabeled"], loaded["validation"],
                        list(spacing) if spacing else None, source)


def _resampled_la(array: np.ndarray, spacing, label: bool) -> np.ndarray:
    image = sitk.GetImageFromArray(array.transpose(2, 1, 0))
    image.SetSpacing(la.SPACING)
    return volumes.to_array(volumes.resample_to_spacing(image, spacing, label=label),
                            dtype=np.uint8 if label else np.float32)


def load_la(root: str | Path, labeled: int, unlabeled: int | None, holdout: int,
            spacing: Sequence[float] | None, zscore_crop: bool = False) -> TrainingData:
    """First `labeled` cases of train.list labeled, the next `unlabeled` (default: all but the held-out)
    unlabeled, the last `holdout` cases for validation. The h5 images are stored z-scored over the whole scan;
    `zscore_crop` z-scores each again over its crop (after resampling, as inference does)."""
    ids = la.read_case_list(root)
    available = len(ids) - holdout
    unlabeled = available - labeled if unlabeled is None else unlabeled
    if labeled < 1 or unlabeled < 0 or labeled + unlabeled > available:
        raise InputError(f"{root}: {labeled} labeled + {unlabeled} unlabeled + {holdout} held out "
                         f"exceeds the {len(ids)} cases of train.list")
    resample = spacing is not None and not np.allclose(spacing, la.SPACING)

    def case(case_id: str, with_label: bool) -> dict:
        image, label = la.read_case(root, case_id)
        if resample:
            image, label = _resampled_la(image, spacing, False), _resampled_la(label, spacing, True)
        if zscore_crop:
            image = volumes.zscore(image)
        return {"name": case_id, "image": image, **({"label": label} if with_label else {})}

    return TrainingData(
        labeled=[case(i, True) for i in ids[:labeled]],
        unlabeled=[case(i, False) for i in ids[labeled:labeled + unlabeled]],
        validation=[case(i, True) for i in ids[len(ids) - holdout:]] if holdout else [],
        spacing=list(spacing) if spacing else list(la.SPACING),
        source=f"LA h5 layout at {root}",
        selection={"labeled": labeled, "unlabeled": unlabeled, "holdout": holdout},
    )


def split_validation(data: TrainingData, fraction: float) -> TrainingData:
    """Hold out the last `fraction` of the labeled cases for validation (at least one labeled stays)."""
    n = int(round(len(data.labeled) * fraction))
    if fraction <= 0 or n == 0:
        return data
    if n >= len(data.labeled):
        raise InputError(f"--val-fraction {fraction} leaves no labeled case for training")
    return TrainingData(data.labeled[:-n], data.unlabeled, data.validation + data.labeled[-n:],
                        data.spacing, data.source, data.selection)
