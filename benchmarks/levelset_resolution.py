"""What the DTC level-set target looks like at each protocol's resolution, on real LA labels (no training).

    python benchmarks/levelset_resolution.py --cases 16
    python benchmarks/levelset_resolution.py --cases 16 --boundary half-voxel   # dtc train --levelset-boundary

The target is 0 on the atrium's inner boundary (its outermost layer of voxels), so the mask the level-set head
stands for, sigmoid(-k z), is 0.5 there for every k, and {z < 0} leaves that layer out. Per spacing, over the
first --cases cases of train.list (whole volumes): the share of the atrium's voxels on the inner boundary and
the Dice of {z < 0} against the label; over random crops of the protocol's patch: the share of crop voxels
where z = 0, and the smallest |z| off the boundary inside and outside (against k = 1500: sigmoid(-1500 z) is
within 1e-6 of 0 or 1 once |z| > 0.0092). With `--boundary half-voxel` no voxel is at 0, so the two columns
counting z = 0 read 0% and {z < 0} should be the label (Dice 1)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from dtc_training import la
from dtc_training.data import _resampled_la
from dtc_training.levelset import BOUNDARIES, levelsets

HERE = Path(__file__).resolve().parent
# spacing (mm) and the patch a protocol crops at it: full, the 1.25 mm runs, lite
PROTOCOLS = {0.625: (112, 112, 80), 1.25: (64, 64, 48), 1.875: (48, 48, 32)}


def levelset(label: np.ndarray, boundary: str) -> np.ndarray:
    return levelsets(torch.as_tensor(label)[None], boundary)[0].numpy()


def measure(labels: list[np.ndarray], patch, crops: int, rng: np.random.Generator, boundary: str) -> dict:
    boundary_share, dice, zero, inside, outside = [], [], [], [], []
    for label in labels:
        mask, z = label > 0, levelset(label, boundary)
        boundary_share.append(np.count_nonzero(mask & (z == 0)) / np.count_nonzero(mask))
        inner = z < 0
        dice.append(2 * np.count_nonzero(inner & mask) / (np.count_nonzero(inner) + np.count_nonzero(mask)))
        for _ in range(crops):
            start = [rng.integers(0, max(1, s - p + 1)) for s, p in zip(label.shape, patch)]
            crop = label[tuple(slice(a, a + p) for a, p in zip(start, patch))]
            if not crop.any():
                continue
            zc = levelset(crop, boundary)
            zero.append(np.mean(zc == 0))
            inside.append(np.abs(zc[(crop > 0) & (zc != 0)]).min())
            outside.append(zc[crop == 0].min())
    return {"boundary_share": np.mean(boundary_share), "dice_z_below_0": np.mean(dice), "crop_zero": np.median(zero),
            "inside_min": np.median(inside), "outside_min": np.median(outside)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--la-root", type=Path, default=HERE.parent.parent / "shared" / "data" / "LA")
    p.add_argument("--cases", type=int, default=16, help="the first N cases of train.list")
    p.add_argument("--crops", type=int, default=3, help="random crops per case")
    p.add_argument("--boundary", choices=BOUNDARIES, default="official", help="where the target's zero level lies")
    args = p.parse_args()
    labels = [la.read_case(args.la_root, case)[1] for case in la.read_case_list(args.la_root)[:args.cases]]
    print("| spacing | patch | inner boundary, share of the atrium | Dice of {z < 0} against the label | "
          "crop voxels with z = 0 | smallest abs(z) off the boundary, inside / outside |\n|---|---|---|---|---|---|")
    for spacing, patch in PROTOCOLS.items():
        resampled = [_resampled_la(label, (spacing,) * 3, True) if spacing != la.SPACING[0] else label
                     for label in labels]
        m = measure(resampled, patch, args.crops, np.random.default_rng(0), args.boundary)
        print(f"| {spacing} mm | {'x'.join(map(str, patch))} | {100 * m['boundary_share']:.1f}% | "
              f"{m['dice_z_below_0']:.3f} | {100 * m['crop_zero']:.2f}% | {m['inside_min']:.3f} / "
              f"{m['outside_min']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
