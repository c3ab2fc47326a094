"""Synthetic LA-like LGE-MRI phantoms with labels, for tests and the demo.

Each phantom has a bright, irregular atrium body with four pulmonary-vein stubs (the label), inside
other anatomy of the same brightness (a ventricle touching it through a thin valve plane, the aorta,
the descending aorta), an enhanced wall, dark lungs, a smooth bias field and Rician noise. The atrium
cannot be found by a threshold: a model has to learn its shape and place."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .files import atomic_json_save
from .volumes import write_image

BLOOD, WALL, MYOCARDIUM, TISSUE, LUNG = 1.0, 0.75, 0.35, 0.45, 0.08


def _ellipsoid(grid, center, radii):
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) <= 1.0


def _tube(grid, start, end, radius):
    """Voxels within `radius` of the segment start-end."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    axis = end - start
    rel = [g - s for g, s in zip(grid, start)]
    t = np.clip(sum(r * a for r, a in zip(rel, axis)) / axis.dot(axis), 0, 1)
    return sum((r - t * a) ** 2 for r, a in zip(rel, axis)) <= radius ** 2


def make_phantom(rng: np.random.Generator, size=(96, 96, 64)) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, label uint8), (x, y, z)."""
    size = np.asarray(size)
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in size], indexing="ij")
    centre = size * (0.5 + rng.uniform(-0.08, 0.08, 3))
    radii = size * rng.uniform(0.14, 0.19, 3) * np.array([1.0, 0.85, 1.0])
    # Irregular atrium: an ellipsoid whose surface is pushed by smooth noise.
    wobble = ndimage.gaussian_filter(rng.normal(size=tuple(size)), 6)
    wobble *= 0.35 / (np.abs(wobble).max() + 1e-6)
    body = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0 + wobble
    veins = np.zeros_like(body)
    for sx in (-1, 1):
        for sz in (-1, 1):
            start = centre + np.array([sx * 0.5, 0.6, sz * 0.5]) * radii
            end = start + np.array([sx * 0.5, 0.9, sz * 0.35]) * radii * rng.uniform(0.8, 1.2)
            veins |= _tube(grid, start, end, radius=rng.uniform(2.0, 3.0))
    atrium = body | veins

    # Same-brightness neighbours: the ventricle meets the atrium through a thin valve plane.
    lv_centre = centre + np.array([rng.uniform(-0.3, 0.3), -1.75, -0.6]) * radii
    ventricle = _ellipsoid(grid, lv_centre, radii * np.array([1.2, 0.95, 1.1])) & ~ndimage.binary_dilation(atrium, iterations=1)
    aorta = _tube(grid, centre + np.array([1.3, -0.6, -1.2]) * radii, centre + np.array([1.1, -0.4, 2.2]) * radii, 4.0)
    descending = _tube(grid, centre + np.array([-0.4, 1.9, -2.5]) * radii, centre + np.array([-0.4, 1.9, 2.5]) * radii, 3.5)
    others = (ventricle | aorta | descending) & ~atrium
    wall = ndimage.binary_dilation(atrium, iterations=2) & ~atrium & ~others
    lungs = _ellipsoid(grid, size * np.array([0.15, 0.6, 0.5]), size * np.array([0.12, 0.3, 0.45])) | \
        _ellipsoid(grid, size * np.array([0.85, 0.6, 0.5]), size * np.array([0.12, 0.3, 0.45]))

    image = np.full(tuple(size), TISSUE, np.float32)
    image[lungs] = LUNG
    image[ndimage.binary_dilation(ventricle, iterations=3) & ~ventricle] = MYOCARDIUM
    image[wall] = WALL * rng.uniform(0.8, 1.2)  # patchy enhancement of the atrial wall
    image[others | atrium] = BLOOD
    image += 0.08 * ndimage.gaussian_filter(rng.normal(size=tuple(size)), 2)  # tissue texture
    bias = np.exp(sum(rng.uniform(-0.4, 0.4) * (g / s - 0.5) for g, s in zip(grid, size)))
    noise = 0.07
    image = np.hypot(image * bias + rng.normal(0, noise, image.shape), rng.normal(0, noise, image.shape))
    return (image * 500).astype(np.float32), atrium.astype(np.uint8)


def _write(array: np.ndarray, path: Path, spacing, origin) -> None:
    image = sitk.GetImageFromArray(array.transpose(2, 1, 0))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    write_image(image, path)


def write_phantoms(out_dir: str | Path, count: int, labeled: int, validation: int, size=(96, 96, 64),
                   spacing=(1.25, 1.25, 1.25), seed: int = 0) -> Path:
    """Write `count` phantoms (images/ and labels/, NRRD) and a datalist: the first `labeled` labeled,
    the last `validation` for validation, the rest unlabeled. Returns the datalist path."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(count):
        image, label = make_phantom(rng, size)
        origin = tuple(rng.uniform(-50, 50, 3))
        entry = {"image": f"images/phantom_{i:03d}.nrrd", "label": f"labels/phantom_{i:03d}.nrrd"}
        _write(image, out / entry["image"], spacing, origin)
        _write(label, out / entry["label"], spacing, origin)
        entries.append(entry)
    datalist = {
        "description": f"{count} synthetic LA phantoms (seed {seed})",
        "labeled": entries[:labeled],
        "unlabeled": [{"image": e["image"]} for e in entries[labeled:count - validation]],
        "validation": entries[count - validation:],
    }
    return atomic_json_save(datalist, out / "datalist.json")
