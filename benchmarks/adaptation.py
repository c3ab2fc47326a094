"""Adapting a model to a second site from a few labeled scans (issue 33): DTC fine-tuned from the model,
against supervised fine-tuning on the same labels and against DTC from a new network, and the labeled scans
chosen by the model's doubt against chosen at random.

    python benchmarks/adaptation.py --model Resources/Models/la-builtin.safetensors \
        --site ../shared/data/MSD-Heart --out /tmp/adaptation --seeds 1337      # one core per seed on a CPU
    python benchmarks/adaptation.py ... --report                              # the table of what has finished

Scans: each site scan (images/ and labels/ of the same names) cropped to the atrium's bounding box plus
--roi-margin mm, the panel's ROI (the model was trained on crops around the atrium; on a whole chest it
fails, docs/benchmarks.md "Field of view"), written once under OUT/site. Per seed the scans are shuffled:
the first --test are held out and scored, the rest form the pool. Arms, each a `dtc train` run scored by
`dtc infer` + `dtc evaluate` on the held-out scans of its seed (the model as is, `zero-shot`, is scored
the same way):

- `dtc-finetune-N`: `--init MODEL`, N pool scans labeled (the first N of the seed's order), the rest of the
  pool unlabeled; `supervised-finetune-N`: the same labels, no unlabeled scan, no level-set regression and no
  consistency (la_accuracy.py's supervised switches); `dtc-scratch-N`: DTC from a new network with the
  model's architecture, patch and spacing;
- `dtc-finetune-N-doubt`: the N pool scans the model doubts most (`dtc rank`) labeled instead;
  `dtc-finetune-N-fromK`: the N scans from position K of the seed's order (every single-scan choice of a
  pool, `-from1` to `-from4` beside `dtc-finetune-1`, gives what a random choice gets on average);
- `...-all`: every pool scan labeled: the all-labeled references.

Every run trains --iterations iterations (equal training time per arm; --lr, or fine-tuning's defaults) with
the held-out scans as validation cases every --val-every iterations (the curve decides how long a
fine-tuning needs; validation never feeds back into training). A run folder with a model is not trained
again, a checkpoint resumes, a scored run is read back: the script goes on where it stopped. Each run writes
OUT/runs/<arm>-seed<S>/result.json (arm, seed, labeled, unlabeled and held-out scans, minutes, the
validation curve, per-case metrics); --report gathers them into OUT/report.json (the table and every run)
and a markdown table."""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from la_accuracy import git_commit  # noqa: E402
from user_path import roi_box  # noqa: E402

from dtc_training.files import atomic_json_save  # noqa: E402

SUPERVISED = ["--consistency", "0", "--levelset-weight", "0"]
# The order of work within a seed: what answers the question first.
DEFAULT_ARMS = ["zero-shot", "dtc-finetune-4", "supervised-finetune-4", "dtc-finetune-all", "dtc-finetune-1",
                "supervised-finetune-1", "dtc-finetune-2", "supervised-finetune-2", "dtc-finetune-1-doubt",
                "dtc-finetune-2-doubt", "dtc-scratch-4", "dtc-scratch-all"]


def dtc(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dtc_training", *map(str, args)], check=True,
                          capture_output=True, text=True)


def prepare_site(site: Path, out: Path, margin_mm: float) -> list[str]:
    """ROI crops of the site's scans under OUT/site/{images,labels}/<case>.nrrd; the case names."""
    cases = sorted(f.name.split(".")[0] for f in (site / "images").iterdir())
    for case in cases:
        target = out / "labels" / f"{case}.nrrd"
        if target.is_file():
            continue
        image = sitk.ReadImage(str(next((site / "images").glob(f"{case}.*"))), sitk.sitkFloat32)
        label = sitk.ReadImage(str(next((site / "labels").glob(f"{case}.*"))))
        index, size = roi_box(label, margin_mm)
        for folder, volume in (("images", image), ("labels", label)):
            (out / folder).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(sitk.RegionOfInterest(volume, size, index), str(out / folder / f"{case}.nrrd"), True)
    return cases


def parse_arm(arm: str) -> dict:
    """'dtc-finetune-2-doubt' -> {method: dtc, start: finetune, labeled: 2, doubt: True, first: 0};
    'dtc-finetune-1-from3': the pool's scan at position 3 of the seed's order labeled instead of the first."""
    if arm == "zero-shot":
        return {"method": None, "start": "model", "labeled": 0, "doubt": False, "first": 0}
    method, start, count, *rest = arm.split("-")
    first = int(rest[0][4:]) if len(rest) == 1 and rest[0].startswith("from") and rest[0][4:].isdigit() else 0
    if method not in ("dtc", "supervised") or start not in ("finetune", "scratch") or \
            not (rest in ([], ["doubt"]) or first):
        raise SystemExit(f"unknown arm {arm!r}")
    return {"method": method, "start": start, "labeled": count if count == "all" else int(count),
            "doubt": rest == ["doubt"], "first": first}


def split(cases: list[str], seed: int, test: int) -> tuple[list[str], list[str]]:
    order = cases[:]
    random.Random(seed).shuffle(order)
    return order[:test], order[test:]


def by_doubt(model: Path, pool: list[str], site: Path, out: Path) -> list[str]:
    """The pool, most doubted first, as `dtc rank` orders it (computed once per seed)."""
    ranking = out / "ranking.json"
    if not ranking.is_file():
        dtc("rank", "--model", model, "--json", ranking, *[site / "images" / f"{c}.nrrd" for c in pool])
    ranked = [Path(r["input"]).name.split(".")[0] for r in json.loads(ranking.read_text())["ranking"]]
    return [c for c in ranked if c in pool]


def score(model: Path, held_out: list[str], site: Path, out: Path) -> list[dict]:
    """`dtc infer` then `dtc evaluate` of `model` on the held-out scans: per-case metrics."""
    dtc("infer", "--model", model, "-o", out / "predictions", *[site / "images" / f"{c}.nrrd" for c in held_out])
    dtc("evaluate", "--pred", *[out / "predictions" / f"{c}-label.nrrd" for c in held_out],
        "--gt", *[site / "labels" / f"{c}.nrrd" for c in held_out], "--json", out / "scores.json")
    return json.loads((out / "scores.json").read_text())["cases"]


def train(arm: dict, labeled: list[str], unlabeled: list[str], held_out: list[str], model: Path, site: Path,
          run_dir: Path, seed: int, args) -> list[dict]:
    """The run's `dtc train` (resumed where a checkpoint is left); its validation curve."""
    entry = lambda c, with_label: ({"image": str(site / "images" / f"{c}.nrrd"),  # noqa: E731
                                    **({"label": str(site / "labels" / f"{c}.nrrd")} if with_label else {})})
    datalist = run_dir / "datalist.json"
    if not datalist.is_file():
        atomic_json_save({"labeled": [entry(c, True) for c in labeled],
                          "unlabeled": [] if arm["method"] == "supervised" else [entry(c, False) for c in unlabeled],
                          "validation": [entry(c, True) for c in held_out]}, datalist)
    if arm["start"] == "finetune":
        start = ["--init", model]
    else:  # a new network on the model's grid and architecture
        meta = json.loads(dtc("info", "--json", model).stdout)
        start = ["--n-filters", meta["n_filters"], "--patch", *meta["patch_size"], "--spacing", *meta["spacing"]]
    resume = ["--resume"] if (run_dir / "checkpoint.pt").is_file() else []
    command = ["train", "--datalist", datalist, "-o", run_dir, *start, *resume, "--iterations", args.iterations,
               "--val-every", args.val_every, "--seed", seed, "--workers", "0", "--amp", args.amp,
               "--progress", "json", *(SUPERVISED if arm["method"] == "supervised" else []),
               *(["--lr", args.lr] if args.lr else [])]
    proc = dtc(*command)
    (run_dir / "train.log").write_text(proc.stdout + proc.stderr)
    return [json.loads(line) for line in proc.stdout.splitlines() if '"event": "validation"' in line]


def run_arm(name: str, seed: int, cases: list[str], args) -> dict:
    run_dir = args.out / "runs" / f"{name}-seed{seed}"
    result_file = run_dir / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    arm, site = parse_arm(name), args.out / "site"
    held_out, pool = split(cases, seed, args.test)
    order = by_doubt(args.model, pool, site, args.out / f"seed{seed}") if arm["doubt"] else pool
    count = len(pool) if arm["labeled"] == "all" else arm["labeled"]
    first = arm["first"]
    labeled, unlabeled = order[first:first + count], order[:first] + order[first + count:]
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    curve = [] if arm["method"] is None else train(arm, labeled, unlabeled, held_out, args.model, site, run_dir,
                                                    seed, args)
    minutes = (time.perf_counter() - started) / 60
    model = args.model if arm["method"] is None else run_dir / "model.safetensors"
    result = {"arm": name, "seed": seed, "labeled": labeled, "unlabeled": [] if arm["method"] == "supervised"
              else unlabeled, "held_out": held_out, "iterations": 0 if arm["method"] is None else args.iterations,
              "lr": args.lr,
              "train_minutes": round(minutes, 2), "validation_curve": [[v["iteration"], v["dice"]] for v in curve],
              "cases": score(model, held_out, site, run_dir), "model": str(args.model), "commit": git_commit(),
              "date": time.strftime("%Y-%m-%d"), "hardware": args.hardware}
    atomic_json_save(result, result_file)
    return result


def report(out: Path) -> dict:
    """Mean Dice per arm over seeds (each seed's mean over its held-out scans), as JSON and markdown."""
    results = [json.loads(f.read_text()) for f in sorted((out / "runs").glob("*/result.json"))]
    arms: dict[str, list[dict]] = {}
    for r in results:
        arms.setdefault(r["arm"], []).append(r)
    table = {}
    for arm, runs in arms.items():
        per_seed = [float(np.mean([c["dice"] for c in r["cases"]])) for r in runs]
        table[arm] = {"dice": float(np.mean(per_seed)), "per_seed": dict(zip([r["seed"] for r in runs], per_seed)),
                      "hd95_mm": float(np.nanmean([c["hd95_mm"] for r in runs for c in r["cases"]])),
                      "train_minutes": float(np.mean([r["train_minutes"] for r in runs])), "runs": len(runs)}
    atomic_json_save({"arms": table, "runs": results}, out / "report.json")
    print("| arm | Dice % (mean over seeds) | per seed | 95HD mm | training min | runs |")
    print("|---|---|---|---|---|---|")
    for arm in sorted(table, key=lambda a: DEFAULT_ARMS.index(a) if a in DEFAULT_ARMS else len(DEFAULT_ARMS)):
        t = table[arm]
        seeds = ", ".join(f"{s}: {100 * d:.1f}" for s, d in t["per_seed"].items())
        print(f"| {arm} | {100 * t['dice']:.2f} | {seeds} | {t['hd95_mm']:.2f} | {t['train_minutes']:.1f} | {t['runs']} |")
    return table


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="the model to adapt (e.g. the built-in one)")
    p.add_argument("--site", type=Path, required=True, help="folder of images/ and labels/ (e.g. MSD-Heart)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[1337, 2024])
    p.add_argument("--arms", nargs="+", default=DEFAULT_ARMS)
    p.add_argument("--test", type=int, default=3, help="held-out scans per seed (3)")
    p.add_argument("--iterations", type=int, default=200, help="iterations of every run (200)")
    p.add_argument("--val-every", type=int, default=50)
    p.add_argument("--lr", type=float, help="learning rate of every run (default: dtc train's, fine-tuning's with --init)")
    p.add_argument("--amp", default="auto", help="dtc train --amp (bf16 on CPUs with native bf16)")
    p.add_argument("--roi-margin", type=float, default=10.0, help="mm around the atrium's bounding box (10)")
    p.add_argument("--hardware", default="", help="recorded with each run (e.g. '1 core of an AMX Xeon')")
    p.add_argument("--report", action="store_true", help="only gather the finished runs")
    args = p.parse_args(argv)
    if not args.report:
        cases = prepare_site(args.site, args.out / "site", args.roi_margin)
        for seed in args.seeds:
            for arm in args.arms:
                result = run_arm(arm, seed, cases, args)
                dice = np.mean([c["dice"] for c in result["cases"]])
                print(f"seed {seed} {arm}: Dice {100 * dice:.2f}% ({result['train_minutes']:.1f} min)", flush=True)
    report(args.out)


if __name__ == "__main__":
    main()
