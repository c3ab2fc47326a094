"""Segmenting volumes with a DTC model: `segment(image, model)` on a SimpleITK image or an (x, y, z) numpy
array, and `segment_files` for many files with the model loaded once. The label map always has the
input's exact grid (size, origin, spacing, direction): the model's preprocessing (reorientation to its
training orientation, resampling to its spacing, whole-scan z-score) runs on a copy, and the probabilities
are resampled back before thresholding. `uncertainty=True` adds the two heads' doubt (`doubt`): a map on
the same grid and one score per scan, from the same network passes."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
import torch

from .devices import resolve_device
from .doubt import CHANNELS, DEFAULT_K, doubt_score
from .errors import InputError
from .files import check_outputs
from .model import DualTaskVNet
from .model_io import ModelFileError, load_model
from .orientations import COUNTS, average_over_orientations
from .postprocessing import keep_largest_component
from .precision import inference_device, resolve_precision
from .quantization import quantized_copy
from .sliding_window import (MODES, WINDOW_SIZES, BothHeads, FoldedVNet, predict_fast, predict_official,
                             window_sides)
from .volumes import (IMAGE_SUFFIXES, TRAINING_ORIENTATION, VolumeError, check_volume, file_stem, from_array,
                      image_suffix, read_image, reorient, resample_like, resample_to_spacing, to_array, write_image,
                      zscore)

log = logging.getLogger(__name__)

THRESHOLD = 0.5  # official: label = mean probability > 0.5


class Model:
    """A loaded network, its metadata and the device it runs on; the fast-mode copies (BN-folded, and its
    int8 quantization; each also with both heads, for the doubt) are built once, on first use."""

    def __init__(self, net: DualTaskVNet, meta: dict, device: str | torch.device | None = None):
        if meta.get("in_channels", 1) != 1:
            raise ModelFileError(f"model expects {meta['in_channels']} input channels; inference feeds one scalar volume")
        self.device = resolve_device(device)
        self.net, self.meta = net.to(self.device).eval(), meta
        self._folded: FoldedVNet | None = None
        self._int8: torch.nn.Module | None = None
        self._int8_both_heads: torch.nn.Module | None = None

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> "Model":
        device = resolve_device(device)  # refused before the model is read
        net, meta = load_model(path, "cpu")
        return cls(net, meta, device)

    @property
    def folded(self) -> FoldedVNet:
        if self._folded is None:
            self._folded = FoldedVNet(self.net)
        return self._folded

    @property
    def int8(self) -> torch.nn.Module:
        if self._int8 is None:
            self._int8 = quantized_copy(self.folded)
        return self._int8

    @property
    def k(self) -> float:
        """The task transform's steepness the model was trained with."""
        return float(self.meta.get("k", DEFAULT_K))

    def fast_network(self, precision: str, both_heads: bool = False) -> torch.nn.Module:
        """What fast mode runs for a resolved precision: the int8 copy, else the BN-folded network; with
        `both_heads`, the copy that also returns the level set (the folded weights shared; the int8 one is
        quantized on first use, as the plain one is)."""
        if not both_heads:
            return self.int8 if precision == "int8" else self.folded
        if precision != "int8":
            return BothHeads(self.folded)
        if self._int8_both_heads is None:
            self._int8_both_heads = quantized_copy(BothHeads(self.folded))
        return self._int8_both_heads


@dataclass
class Segmentation:
    label: sitk.Image | np.ndarray  # uint8 {0, 1}, the type and grid of the input
    probability: sitk.Image | np.ndarray | None  # float32 in [0, 1], when asked for
    info: dict = field(default_factory=dict)  # mode, windows, device, largest_component, resampled, seconds
    doubt: sitk.Image | np.ndarray | None = None  # float32 |P - Q| in [0, 1] (see `doubt`), when asked for
    doubt_score: float | None = None  # its mean where either head says foreground (None: neither does)


def segment(image: sitk.Image | np.ndarray, model: Model | str | Path, *, mode: str = "fast",
            largest_component: bool = False, probability: bool = False, spacing: Sequence[float] | None = None,
            normalize: bool = True, memory_gb: float | None = None, window_size: str = "patch",
            orientations: int = 1, precision: str = "auto", uncertainty: bool = False,
            name: str = "image") -> Segmentation:
    """Segment one volume. A numpy array is (x, y, z) on the grid of `spacing` (mm; None = already on
    the model's grid). `normalize=False` skips the z-score for data stored normalised (the UA-MT h5 files).
    `largest_component` keeps the largest 26-connected component, as the official `--nms 1`.
    `window_size` sizes the fast mode's windows: "patch" (the training patch; default) or "volume" (one pass).
    `orientations` > 1 averages over that many of the in-plane orientations seen in training (1, 2, 4, 8).
    `precision`: fast mode's arithmetic, "auto" (fp16 on CUDA, int8 on an x86-64 CPU), "fp32", "fp16" (CUDA)
    or "int8" (CPU; see `precision`). Official mode always computes in fp32. `uncertainty` also returns the
    heads' doubt map and score (`doubt`), from the same passes; the label and probabilities stay as without."""
    if mode not in MODES:
        raise InputError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
    if orientations not in COUNTS:
        raise InputError(f"orientations {orientations}: choose one of {', '.join(map(str, COUNTS))}")
    if window_size not in WINDOW_SIZES:
        raise InputError(f"window size {window_size!r}: choose one of {', '.join(WINDOW_SIZES)}")
    model = model if isinstance(model, Model) else Model.load(model, inference_device("auto", precision))
    precision = resolve_precision(precision, mode, model.device)
    started = time.perf_counter()
    is_array = isinstance(image, np.ndarray)
    if is_array:
        if image.ndim != 3:
            raise VolumeError(f"{name}: array is {image.ndim}D, a 3D (x, y, z) volume is needed")
        grid_spacing = spacing if spacing is not None else model.meta.get("spacing")
        image = from_array(image.astype(np.float32, copy=False), _grid(image.shape, grid_spacing))
    check_volume(image, name)
    # Files saved before models recorded their orientation were all trained on the LA arrays.
    grid = reorient(image, model.meta.get("orientation", TRAINING_ORIENTATION))
    reoriented, target = grid is not image, model.meta.get("spacing")
    resampled = target is not None and not np.allclose(grid.GetSpacing(), target, rtol=1e-4)
    if resampled:
        grid = resample_to_spacing(sitk.Cast(grid, sitk.sitkFloat32), target)
    array = to_array(grid, name)
    if normalize:
        array = zscore(array)

    patch, doubt_k = model.meta["patch_size"], model.k if uncertainty else None
    if mode == "official":
        predict = partial(predict_official, model.net, patch=patch, device=model.device, doubt_k=doubt_k)
    else:
        predict = partial(predict_fast, model.fast_network(precision, uncertainty), patch=patch,
                          device=model.device, fp16=precision == "fp16", n_filters=model.meta["n_filters"],
                          memory_gb=memory_gb, max_sides=window_sides(patch, window_size), doubt_k=doubt_k)
    channels, info = average_over_orientations(predict, array, orientations)
    channels = channels if uncertainty else channels[None]
    moved_to_cpu = precision == "fp16" and info["device"] == "cpu"  # out of GPU memory: finished in fp32
    info["precision"] = "fp32" if moved_to_cpu else precision
    if mode == "fast":
        info["window_size"] = window_size
    if resampled or reoriented:  # onto the input's own grid (a permutation of axes maps voxels exactly)
        channels = [to_array(resample_like(from_array(c, grid), image), name) for c in channels]
    prob = channels[0]
    label = (prob > THRESHOLD).astype(np.uint8)
    if largest_component:
        label = keep_largest_component(label)
    doubt, score = None, None
    if uncertainty:
        named = dict(zip(CHANNELS, channels))
        doubt = named["doubt"]
        score = doubt_score(named["probability"], doubt, named["levelset_probability"], THRESHOLD)
        info["doubt_score"] = None if score is None else round(score, 6)
    info.update(largest_component=largest_component, resampled=resampled, reoriented=reoriented,
                normalized=normalize, foreground_voxels=int(label.sum()), seconds=round(time.perf_counter() - started, 3))
    prob = prob if probability else None
    if not is_array:
        label, prob, doubt = (None if a is None else from_array(a, image) for a in (label, prob, doubt))
    return Segmentation(label, prob, info, doubt, score)


def _grid(shape: Sequence[int], spacing: Sequence[float] | None) -> sitk.Image:
    grid = sitk.Image([int(s) for s in shape], sitk.sitkUInt8)
    grid.SetSpacing([float(s) for s in spacing] if spacing is not None else (1.0, 1.0, 1.0))
    return grid


# ---- files -------------------------------------------------------------------------------------------

def _stem(path: Path) -> str:
    return file_stem(path) if path.is_file() else path.resolve().name  # a DICOM folder "." is named after itself


RESULT_SUFFIXES = ("-label", "-probability", "-doubt")


def is_infer_output(path: Path) -> bool:
    """Whether a file is named like a label, probability or doubt map this command writes (<input>-label.nrrd)."""
    return file_stem(path).endswith(RESULT_SUFFIXES)


def collect_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Each path is a volume file, a DICOM series folder, or a folder of volume files (not recursive)."""
    volumes = []
    for path in map(Path, paths):
        if not path.exists():
            raise VolumeError(f"{path}: file not found")
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)) if path.is_dir() else ()
        if len(series) > 1:
            raise VolumeError(f"{path}: folder holds {len(series)} DICOM series; give a folder with one series")
        if path.is_dir() and not series:
            found = sorted(p for p in path.iterdir() if p.is_file() and image_suffix(p) in IMAGE_SUFFIXES)
            earlier = [p for p in found if is_infer_output(p)]
            if earlier:  # a second run over a folder it wrote into must not segment its own results
                log.info("%s: skipping %d earlier results (*-label, *-probability, *-doubt), e.g. %s",
                         path, len(earlier), earlier[0].name)
                found = [p for p in found if not is_infer_output(p)]
            if not found:
                raise VolumeError(f"{path}: folder holds neither a DICOM series nor volume files ({', '.join(IMAGE_SUFFIXES)})")
            volumes += found
        else:
            volumes.append(path)
    return volumes


def output_paths(inputs: Sequence[Path], output: str | Path) -> list[Path]:
    """One input and OUTPUT with an image suffix: OUTPUT is the label file. Otherwise OUTPUT is a folder
    receiving `<input name>-label.nrrd` per input."""
    output = Path(output)
    if len(inputs) == 1 and image_suffix(output) in IMAGE_SUFFIXES and not output.is_dir():
        return [output]
    names = [f"{_stem(p)}-label.nrrd" for p in inputs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"several inputs would write {', '.join(duplicates)} in {output}; segment them separately")
    return [output / n for n in names]


def result_path(label_path: Path, kind: str) -> Path:
    """Where the `kind` map ("probability", "doubt") of a label file goes: beside it, <input>-<kind>.<suffix>."""
    stem = file_stem(label_path).removesuffix("-label")
    return label_path.with_name(f"{stem}-{kind}{image_suffix(label_path)}")


def planned_files(inputs: Sequence[str | Path], output: str | Path, probability: bool = False,
                  uncertainty: bool = False) -> tuple[list[Path], list[Path], list[Path]]:
    """What `segment_files` would read and write: the volumes (files or DICOM folders), the files they are
    read from (a DICOM folder's slices), and the label maps then the probability and doubt maps it writes."""
    volumes = collect_inputs(inputs)
    labels = output_paths(volumes, output)
    read = [Path(f) for v in volumes
            for f in (sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(v)) if v.is_dir() else [v])]
    kinds = [kind for kind, asked in (("probability", probability), ("doubt", uncertainty)) if asked]
    return volumes, read, labels + [result_path(p, kind) for kind in kinds for p in labels]


def check_all_inputs(volumes: Sequence[Path]) -> None:
    """Read and check every input (each is read again when its turn comes); all problems at once."""
    problems = []
    for source in volumes:
        try:
            check_volume(read_image(source), source)
        except VolumeError as e:
            problems += e.problems
    if problems:
        raise InputError(problems)


def segment_files(inputs: Sequence[str | Path], model: Model, output: str | Path, *, probability: bool = False,
                  uncertainty: bool = False, **options) -> list[dict]:
    """Segment every input (see collect_inputs) and write label maps (and probability and doubt maps) with
    each input's geometry. Outputs are checked before any work: writable, and none an input (`check_outputs`).
    Returns one report per input."""
    volumes, read, written = planned_files(inputs, output, probability, uncertainty)
    check_outputs(written, read)
    labels = written[:len(volumes)]
    if len(volumes) > 1:  # a bad input late in a folder must not stop the run after half the labels are written
        check_all_inputs(volumes)
    reports = []
    for source, label_path in zip(volumes, labels):
        result = segment(read_image(source), model, probability=probability, uncertainty=uncertainty,
                         name=str(source), **options)
        write_image(result.label, label_path)
        report = {"input": str(source), "label": str(label_path), **result.info}
        for kind, image in (("probability", result.probability), ("doubt", result.doubt)):
            if image is not None:
                write_image(image, result_path(label_path, kind))
                report[kind] = str(result_path(label_path, kind))
        doubt = f", doubt {score_text(result.doubt_score)}" if uncertainty else ""
        log.info("%s -> %s (%s mode, %s, %d window(s) x %d orientation(s) on %s, largest component %s%s, %.1f s)",
                 source, label_path, report["mode"], report["precision"], report["windows"],
                 report["orientations"], report["device"],
                 "applied" if report["largest_component"] else "not applied", doubt, report["seconds"])
        reports.append(report)
    return reports


def score_text(score: float | None) -> str:
    """A doubt score as the log lines and `dtc rank` print it."""
    return "none (neither head finds foreground)" if score is None else f"{score:.4f}"
