"""Scoring segmentations: from prediction/ground-truth files, or by running a model over LA cases in the
UA-MT h5 layout. Per-case and mean metrics (see metrics.py), written as a table, JSON or CSV."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from . import la
from .errors import InputError
from .files import atomic_json_save, atomic_write
from .metrics import METRICS, case_metrics, mean_metrics
from .postprocessing import keep_largest_component
from .volumes import IMAGE_SUFFIXES, file_stem, image_suffix, read_image, to_array

if TYPE_CHECKING:  # torch and MONAI load only to run a model: scoring files needs neither
    from .infer import Model


def _case_name(path: Path) -> str:
    return file_stem(path).removesuffix("-label")  # `dtc infer` names outputs <case>-label


def _volume_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and image_suffix(p) in IMAGE_SUFFIXES)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    return [path]


def _one_per_case(files: list[Path], side: str) -> dict[str, Path]:
    """Files by case name. Where `case-label` lies beside `case` (`dtc infer` writing into the scans' folder,
    or images kept with their labels) the label is the one scored; any other clash is an error."""
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(_case_name(f), []).append(f)
    chosen = {}
    for name, group in groups.items():
        labels = [f for f in group if file_stem(f).endswith("-label")]
        if len(group) > 1 and len(labels) == 1:
            group = labels
        if len(group) > 1:
            raise InputError(f"{side}: {', '.join(f.name for f in group)} are all case {name!r}; keep one file per case")
        chosen[name] = group[0]
    return chosen


def pair_files(predictions: Sequence[str | Path], truths: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """Two folders: files paired by case name (a `-label` suffix from `dtc infer` ignored, its
    `-probability` and `-doubt` maps skipped). Lists of files: paired in order."""
    preds = [f for p in predictions for f in _volume_files(Path(p))  # `dtc infer` writes these maps beside labels
             if not _case_name(f).endswith(("-probability", "-doubt"))]
    gts = [f for g in truths for f in _volume_files(Path(g))]
    if all(Path(p).is_dir() for p in (*predictions, *truths)):
        by_name, truth_by_name = _one_per_case(preds, "predictions"), _one_per_case(gts, "ground truth")
        missing = [g.name for g in truth_by_name.values() if _case_name(g) not in by_name]
        if missing:
            raise InputError(f"no prediction for ground truth {', '.join(missing)}")
        return [(by_name[name], g) for name, g in truth_by_name.items()]
    if len(preds) != len(gts) or not gts:
        raise InputError(f"{len(preds)} prediction(s) for {len(gts)} ground truth(s): give them in pairs")
    return list(zip(preds, gts))


def evaluate_files(pairs: Sequence[tuple[Path, Path]], largest_component: bool = False) -> list[dict]:
    cases = []
    for pred_path, gt_path in pairs:
        pred, gt = read_image(pred_path), read_image(gt_path)
        if pred.GetSize() != gt.GetSize() or not np.allclose(pred.GetOrigin() + pred.GetSpacing() + pred.GetDirection(),
                                                             gt.GetOrigin() + gt.GetSpacing() + gt.GetDirection(), atol=1e-3):
            raise InputError(f"{pred_path}: not on the grid of {gt_path} (size {pred.GetSize()} vs {gt.GetSize()}, "
                             "or origin/spacing/direction differ)")
        prediction = to_array(pred, pred_path) > 0
        if largest_component:
            prediction = keep_largest_component(prediction)
        metrics = case_metrics(prediction, to_array(gt, gt_path), gt.GetSpacing())
        cases.append({"case": _case_name(gt_path), "prediction": str(pred_path), "truth": str(gt_path), **metrics})
    return cases


def evaluate_model(model: Model, root: str | Path, case_ids: Sequence[str], *, mode: str = "fast",
                   window_size: str = "patch", largest_component: bool = False, orientations: int = 1,
                   precision: str = "auto") -> list[dict]:
    """Segment each LA h5 case: as stored (z-scored over the whole scan, as the official test), or z-scored
    again over its crop for a model trained so (metadata `la_zscore`)."""
    from .infer import segment

    cases = []
    for case_id in case_ids:
        image, truth = la.read_case(root, case_id)
        result = segment(image, model, mode=mode, window_size=window_size, largest_component=largest_component,
                         spacing=la.SPACING, normalize=model.meta.get("la_zscore") == "crop", orientations=orientations, precision=precision,
                         name=case_id)
        cases.append({"case": case_id, **case_metrics(result.label, truth, la.SPACING),
                      "seconds": result.info["seconds"]})
    return cases


def report(cases: list[dict], settings: dict) -> dict:
    return {"settings": settings, "cases": cases, "mean": mean_metrics(cases), "count": len(cases)}


def _number(value: float, percent: bool = False) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}" if percent else f"{value:.2f}"


def format_table(result: dict) -> str:
    header = ["case", "Dice %", "Jaccard %", "HD95 vox", "ASD vox", "HD95 mm", "ASD mm", "note"]
    rows = []
    for row in (*result["cases"], {"case": "mean", **result["mean"]}):
        note = "empty prediction" if row.get("empty_prediction") else "empty truth" if row.get("empty_truth") else ""
        rows.append([row["case"], *(_number(row[k], k in ("dice", "jaccard")) for k in METRICS), note])
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in (header, *rows)]
    settings = ", ".join(f"{k}: {v}" for k, v in result["settings"].items())
    return "\n".join([settings, *lines[:1], "-" * len(lines[0]), *lines[1:]])


def save_json(result: dict, path: str | Path) -> None:
    """NaN (undefined distances) is written as null, so the file is standard JSON."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return None if isinstance(value, float) and math.isnan(value) else value
    atomic_json_save(clean(result), path)


def save_csv(result: dict, path: str | Path) -> None:
    columns = ["case", *METRICS, "empty_prediction", "empty_truth"]
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(result["cases"])
    writer.writerow({"case": "mean", **result["mean"]})
    atomic_write(path, lambda f: f.write(text.getvalue()), mode="w")
