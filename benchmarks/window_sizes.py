"""Fast-mode window size against accuracy: Dice against the ground truth on the held-out development
cases with one trained model, for windows of the training patch (the default), one or two 16-voxel steps
larger, in-plane as large as memory allows at the patch's depth, and whole-volume windows. Times are
per case on this machine.

    python benchmarks/window_sizes.py --model runs/la_accuracy/full-dtc-seed1337/model.safetensors

Writes benchmarks/results/window_sizes_<run>.json (<run>: the model's folder name) and prints a table."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dtc_training import la
from dtc_training.infer import Model
from dtc_training.metrics import dice
from dtc_training.sliding_window import predict_fast
from la_accuracy import write_model_result  # benchmarks/ is on the path of a script run from it

HERE = Path(__file__).resolve().parent
BIG = 10**6  # a side no volume reaches: that axis is limited by memory only


def variants(patch: list[int]) -> dict[str, tuple[int, ...] | None]:
    """Largest window sides of each variant (None: the whole volume when it fits)."""
    return {"patch": tuple(patch), "patch+16": tuple(p + 16 for p in patch),
            "patch+32": tuple(p + 32 for p in patch), "in-plane whole, patch depth": (BIG, BIG, patch[2]),
            "volume": None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--la-root", type=Path, default=HERE.parent.parent / "shared" / "data" / "LA")
    p.add_argument("--cases", type=Path, default=HERE / "splits" / "la_validation.list")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = Model.load(args.model, "cpu")
    patch = model.meta["patch_size"]
    rows = []
    for case in args.cases.read_text().split():
        image, truth = la.read_case(args.la_root, case)
        row = {"case": case, "shape": list(image.shape)}
        for name, sides in variants(patch).items():
            started = time.perf_counter()
            prob, info = predict_fast(model.folded, image, patch, model.device, model.meta["n_filters"], max_sides=sides)
            row[name] = {"dice": round(dice(prob > 0.5, truth), 4), "seconds": round(time.perf_counter() - started, 2),
                         "windows": info["windows"], "window": info["window"]}
        rows.append(row)
        print(case, " | ".join(f"{k} {v['dice']:.3f} ({v['windows']} x {v['window']}, {v['seconds']} s)"
                               for k, v in row.items() if isinstance(v, dict)), flush=True)
    names = list(variants(patch))
    mean = {name: round(float(np.mean([r[name]["dice"] for r in rows])), 4) for name in names}
    seconds = {name: round(float(np.mean([r[name]["seconds"] for r in rows])), 2) for name in names}
    write_model_result("window_sizes", args.model, args.cases, torch_threads=torch.get_num_threads(),
                       mean_dice=mean, mean_seconds=seconds, per_case=rows)
    print("mean Dice:", json.dumps(mean))
    print("mean seconds:", json.dumps(seconds))


if __name__ == "__main__":
    main()
