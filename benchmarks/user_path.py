"""The user's path against the h5 path, on the held-out development cases: what segmenting a scan from a
file costs against the numbers `dtc evaluate --la-root` reports.

The LA h5 images were z-scored over the whole uncropped scan and then cropped around the atrium; `dtc
evaluate --la-root` feeds them as they are, or z-scored again over the crop for a model trained with
`--la-zscore crop` (then `h5` and `file` are one computation). A user's file goes through `dtc infer`, which
z-scores it over whatever field of view it has. Three inputs, all scored with `dtc evaluate` against the same labels:

- `h5`: `dtc evaluate --model M --la-root LA --cases benchmarks/splits/la_validation.list` (the reference);
- `file`: each h5 case written as NRRD (0.625 mm) and segmented by `dtc infer` (z-scored over the crop);
- `roi`: the same file cropped to the atrium's bounding box plus a margin (`--roi-margin`, mm), as a user's
  region of interest in the panel.

    python benchmarks/user_path.py --model Resources/Models/la-builtin.safetensors --out /tmp/user_path

With `--site DIR` (a folder of `images/` and `labels/`, e.g. ../shared/data/MSD-Heart, whose scans keep most
of their field of view) it compares `file` (the whole scan) with `roi` on that site's scans instead.

Writes OUT/results.json (each case's Dice per input, and the mean and SD of each file and ROI in the input's
units: for the h5 cases, how far a z-score over the crop moves the intensities) and prints a table."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from dtc_training import la

HERE = Path(__file__).resolve().parent
INPUTS = ("h5", "file", "roi")


def write_case(out: Path, case: str, image: sitk.Image, label: sitk.Image) -> None:
    for folder, volume in (("images", image), ("labels", label)):
        (out / folder).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(volume, str(out / folder / f"{case}.nrrd"), True)


def la_volume(array: np.ndarray) -> sitk.Image:
    volume = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    volume.SetSpacing(la.SPACING)
    return volume


def roi_box(label: sitk.Image, margin_mm: float) -> tuple[list[int], list[int]]:
    """(index, size) of the label's bounding box grown by `margin_mm`, within the image."""
    where = np.nonzero(sitk.GetArrayViewFromImage(label).transpose(2, 1, 0))
    margin = [int(round(margin_mm / s)) for s in label.GetSpacing()]
    low = [max(int(w.min()) - m, 0) for w, m in zip(where, margin)]
    high = [min(int(w.max()) + m + 1, n) for w, m, n in zip(where, margin, label.GetSize())]
    return low, [h - lo for lo, h in zip(low, high)]


def intensity(image: sitk.Image) -> list[float]:
    array = sitk.GetArrayViewFromImage(image)
    return [float(array.mean()), float(array.std())]


def dtc(*args) -> None:
    subprocess.run([sys.executable, "-m", "dtc_training", *map(str, args)], check=True)


def per_case(result_file: Path) -> dict[str, float]:
    result = json.loads(result_file.read_text())
    return {c["case"]: c["dice"] for c in result["cases"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--la-root", type=Path, default=HERE.parent.parent / "shared" / "data" / "LA")
    p.add_argument("--cases", type=Path, default=HERE / "splits" / "la_validation.list")
    p.add_argument("--roi-margin", type=float, default=10.0, help="mm around the atrium's bounding box")
    p.add_argument("--site", type=Path, help="images/ and labels/ of another site, instead of the LA h5 cases")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    inputs = ("file", "roi") if args.site else INPUTS
    if args.site:
        cases = sorted(f.name.split(".")[0] for f in (args.site / "images").iterdir())
        read = lambda c: (sitk.ReadImage(str(args.site / "images" / f"{c}.nii.gz"), sitk.sitkFloat32),
                          sitk.ReadImage(str(args.site / "labels" / f"{c}.nii.gz")))
    else:
        cases = args.cases.read_text().split()
        read = lambda c: tuple(la_volume(a) for a in la.read_case(args.la_root, c))
    crops = {}
    for case in cases:
        image, label = read(case)
        write_case(args.out / "file", case, image, label)
        index, size = roi_box(label, args.roi_margin)
        roi = sitk.RegionOfInterest(image, size, index)
        write_case(args.out / "roi", case, roi, sitk.RegionOfInterest(label, size, index))
        crops[case] = {"file_intensity": intensity(image), "roi_intensity": intensity(roi),
                       "shape": list(image.GetSize()), "roi_shape": size}
    if not args.site:
        dtc("evaluate", "--model", args.model, "--la-root", args.la_root, "--cases", args.cases,
            "--json", args.out / "h5.json")
    for name in ("file", "roi"):
        folder = args.out / name
        images = [folder / "images" / f"{c}.nrrd" for c in cases]
        dtc("infer", "--model", args.model, "-o", folder / "predictions", *images)
        dtc("evaluate", "--pred", *[folder / "predictions" / f"{c}-label.nrrd" for c in cases],
            "--gt", *[folder / "labels" / f"{c}.nrrd" for c in cases], "--json", args.out / f"{name}.json")
    dice = {name: per_case(args.out / f"{name}.json") for name in inputs}
    rows = [{"case": c, **{n: dice[n][c] for n in inputs}, **crops[c]} for c in cases]
    mean = {n: float(np.mean([r[n] for r in rows])) for n in inputs}
    (args.out / "results.json").write_text(json.dumps({"model": str(args.model), "roi_margin_mm": args.roi_margin,
                                                       "site": str(args.site or args.la_root),
                                                       "mean_dice": mean, "cases": rows}, indent=2))
    print("| case | " + " | ".join(inputs) + " | size | ROI size | mean, SD of the file | of the ROI |")
    for r in rows:
        print(f"| {r['case']} | " + " | ".join(f"{100 * r[n]:.2f}" for n in inputs)
              + f" | {r['shape']} | {r['roi_shape']} | {r['file_intensity'][0]:.2f}, {r['file_intensity'][1]:.2f}"
              f" | {r['roi_intensity'][0]:.2f}, {r['roi_intensity'][1]:.2f} |")
    print("| mean | " + " | ".join(f"{100 * mean[n]:.2f}" for n in inputs) + " | | | | |")


if __name__ == "__main__":
    main()
