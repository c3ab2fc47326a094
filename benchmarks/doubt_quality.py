"""How well the two heads' doubt finds what is wrong (issue 33): per scan, the Spearman correlation between
the doubt score and the Dice (does the score rank scans by how badly they are segmented?); per voxel, the
AUROC of the doubt map for the wrongly labeled voxels (does the map point at the errors?).

    python benchmarks/doubt_quality.py --model MODEL --scans DIR --out OUT

DIR holds images/ and labels/ of the same names (e.g. user_path.py's OUT/file or OUT/roi, adaptation.py's
OUT/site). The scans are segmented by `dtc infer --uncertainty` (the default fast mode) and scored by `dtc
evaluate`. A voxel is wrong where the label differs from the ground truth; the AUROC is the probability that
a wrong voxel has a higher doubt than a right one (ties count half), pooled over every voxel of every scan,
and its mean over scans. Writes OUT/doubt_quality.json and prints one line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import stats

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from la_accuracy import git_commit  # noqa: E402
from user_path import dtc  # noqa: E402


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUROC of `score` for `positive` (ties count half); NaN when one class is empty."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    u = stats.mannwhitneyu(score[positive], score[~positive], alternative="two-sided").statistic
    return float(u / (n_pos * n_neg))


def read(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).ravel()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--scans", type=Path, required=True, help="folder with images/ and labels/")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    images = sorted((args.scans / "images").iterdir())
    cases = [f.name.split(".")[0] for f in images]
    truths = [next((args.scans / "labels").glob(f"{c}.*")) for c in cases]
    dtc("infer", "--model", args.model, "--uncertainty", "--report", args.out / "report.json",
        "-o", args.out / "predictions", *images)
    reports = {Path(r["input"]).name.split(".")[0]: r for r in json.loads((args.out / "report.json").read_text())["reports"]}
    dtc("evaluate", "--pred", *[reports[c]["label"] for c in cases], "--gt", *truths, "--json", args.out / "scores.json")
    dice = [c["dice"] for c in json.loads((args.out / "scores.json").read_text())["cases"]]
    rows, doubts, wrongs = [], [], []
    for case, truth, case_dice in zip(cases, truths, dice):
        doubt, wrong = read(reports[case]["doubt"]), (read(reports[case]["label"]) > 0) != (read(truth) > 0)
        doubts.append(doubt), wrongs.append(wrong)
        rows.append({"case": case, "dice": case_dice, "doubt_score": reports[case]["doubt_score"],
                     "voxel_auroc": auroc(doubt, wrong), "wrong_voxels": int(wrong.sum())})
    scored = [r for r in rows if r["doubt_score"] is not None]
    rho, p_value = stats.spearmanr([r["doubt_score"] for r in scored], [r["dice"] for r in scored])
    result = {"model": str(args.model), "scans": str(args.scans), "count": len(rows),
              "spearman_score_dice": float(rho), "spearman_p": float(p_value),
              "voxel_auroc_pooled": auroc(np.concatenate(doubts), np.concatenate(wrongs)),
              "voxel_auroc_mean": float(np.nanmean([r["voxel_auroc"] for r in rows])),
              "mean_dice": float(np.mean(dice)), "commit": git_commit(), "cases": rows}
    (args.out / "doubt_quality.json").write_text(json.dumps(result, indent=2))
    print(f"{len(rows)} scans, Dice {100 * result['mean_dice']:.2f}%: Spearman(doubt score, Dice) {rho:.2f} "
          f"(p={p_value:.3f}); voxel AUROC for wrong voxels {result['voxel_auroc_pooled']:.3f} pooled, "
          f"{result['voxel_auroc_mean']:.3f} mean over scans")


if __name__ == "__main__":
    main()
