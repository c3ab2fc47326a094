"""How much each inference mode's labels move when the scan's field of view moves by a few voxels: the
agreement a mode keeps with itself, which bounds the agreement any other mode can be expected to reach
with it. Each held-out case is segmented as stored and again padded by `--shift` zero voxels at the low
end of each axis (the official grid then lands elsewhere on the anatomy: 9/9/2 is half its stride), and the
padded result is cropped back. Modes: `official`, `fast` (patch windows, the default) and `fast
--window-size volume`.

    python benchmarks/grid_shift.py --model runs/la_accuracy/full-dtc+intensity+spatial+low-contrast-seed1337/model.safetensors

Writes benchmarks/results/grid_shift_<run>.json (<run>: the model's folder name) and prints a table;
`--keep-labels DIR` also writes every label (npz, per case) for later comparisons."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dtc_training import la
from dtc_training.infer import Model, segment
from dtc_training.metrics import dice
from inference_modes import MODES  # benchmarks/ is on the path of a script run from it
from la_accuracy import write_model_result

HERE = Path(__file__).resolve().parent


def shifted_label(image: np.ndarray, model: Model, shift: tuple[int, int, int], **options) -> np.ndarray:
    padded = np.pad(image, [(s, 0) for s in shift])  # zero = the mean of the z-scored scan, as the official padding
    label = segment(padded, model, spacing=la.SPACING, normalize=False, **options).label
    return label[shift[0]:, shift[1]:, shift[2]:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--la-root", type=Path, default=HERE.parent.parent / "shared" / "data" / "LA")
    p.add_argument("--cases", type=Path, default=HERE / "splits" / "la_validation.list")
    p.add_argument("--shift", type=int, nargs=3, default=(9, 9, 2), help="voxels of padding (x y z)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep-labels", type=Path, help="folder for each case's labels (<case>.npz)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = Model.load(args.model, "cpu")
    shift = tuple(args.shift)
    rows = []
    for case in args.cases.read_text().split():
        image, truth = la.read_case(args.la_root, case)
        labels = {}
        for name, options in MODES.items():
            labels[name] = shifted_label(image, model, (0, 0, 0), **options)
            labels[f"{name}-shifted"] = shifted_label(image, model, shift, **options)
        row = {"case": case,
               **{f"{m}_vs_shifted": dice(labels[m], labels[f"{m}-shifted"]) for m in MODES},
               "official_vs_fast": dice(labels["official"], labels["fast"]),
               "official_vs_fast_volume": dice(labels["official"], labels["fast-volume"]),
               **{f"dice_{name.replace('-', '_')}": dice(label, truth) for name, label in labels.items()}}
        rows.append(row)
        if args.keep_labels:
            args.keep_labels.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(args.keep_labels / f"{case}.npz", **labels)
        print(" | ".join([case] + [f"{k} {v:.3f}" for k, v in row.items() if k != "case"]), flush=True)
    keys = [k for k in rows[0] if k != "case"]
    mean = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in keys}
    median = {k: round(float(np.median([r[k] for r in rows])), 4) for k in keys}
    write_model_result("grid_shift", args.model, args.cases, shift=list(shift), mean=mean, median=median, per_case=rows)
    print("mean:", json.dumps(mean))
    print("median:", json.dumps(median))


if __name__ == "__main__":
    main()
