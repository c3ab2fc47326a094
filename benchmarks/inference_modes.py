"""Inference modes against the ground truth: `official` (the official window grid, plain averaging), the
default `fast` mode (windows of the training patch, Gaussian blending), fast mode with whole-volume
windows (`--window-size volume`, one pass) and fast mode in int8 (`--precision int8`), on the held-out
development cases with one trained model. Reports, per case and on average, the Dice between the official
and fast labels and each mode's Dice against the ground truth, so that a disagreement between the modes can
be told apart from a loss of accuracy.

    python benchmarks/inference_modes.py --model runs/la_accuracy/lite-dtc-seed2024/model.safetensors

`--official-labels DIR` takes the `official` labels that `grid_shift.py --keep-labels DIR` kept for the same
model (74 s a case on 2 CPU cores) instead of computing them again.

Writes benchmarks/results/inference_modes_<run>.json (<run>: the model's folder name) and prints a table."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dtc_training import la
from dtc_training.infer import Model, segment
from dtc_training.metrics import dice
from la_accuracy import write_model_result  # benchmarks/ is on the path of a script run from it

HERE = Path(__file__).resolve().parent
MODES = {"official": {"mode": "official"}, "fast": {"mode": "fast", "precision": "fp32"},
         "fast-volume": {"mode": "fast", "window_size": "volume", "precision": "fp32"},
         "fast-int8": {"mode": "fast", "precision": "int8"}}  # segment()'s options of each compared mode


def labels(image: np.ndarray, model: Model, kept: Path | None) -> dict[str, np.ndarray]:
    out = {"official": np.load(kept)["official"]} if kept else {}
    return out | {name: segment(image, model, spacing=la.SPACING, normalize=False, **kw).label
                  for name, kw in MODES.items() if name not in out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--la-root", type=Path, default=HERE.parent.parent / "shared" / "data" / "LA")
    p.add_argument("--cases", type=Path, default=HERE / "splits" / "la_validation.list")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 leaves a core to other work)")
    p.add_argument("--official-labels", type=Path, help="grid_shift.py's --keep-labels folder for this model")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = Model.load(args.model, "cpu")
    rows = []
    for case in args.cases.read_text().split():
        image, truth = la.read_case(args.la_root, case)
        out = labels(image, model, args.official_labels / f"{case}.npz" if args.official_labels else None)
        row = {"case": case, **{f"official_vs_{m.replace('-', '_')}": dice(out["official"], out[m])
                                for m in MODES if m != "official"},
               "fast_vs_fast_int8": dice(out["fast"], out["fast-int8"]),
               **{f"dice_{m.replace('-', '_')}": dice(out[m], truth) for m in MODES}}
        rows.append(row)
        print(" | ".join([case] + [f"{v:.3f}" for k, v in row.items() if k != "case"]), flush=True)
    mean = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0] if k != "case"}
    write_model_result("inference_modes", args.model, args.cases, mean=mean, per_case=rows,
                       official_labels=str(args.official_labels) if args.official_labels else "computed")
    print("mean:", json.dumps(mean))


if __name__ == "__main__":
    main()
