"""Accuracy on the real LA data: supervised-only vs DTC on the fixed development split
(benchmarks/splits: 16 labeled, 48 unlabeled, 16 held out), evaluated with `dtc evaluate` on the 16
held-out cases with and without largest-component post-processing.

    python benchmarks/la_accuracy.py --protocol lite --seeds 1337 2024     # 2-core CPU, in the background
    python benchmarks/la_accuracy.py --protocol full --seeds 1337          # the paper's setting, one GPU

Protocols:
- lite: volumes resampled to 1.875 mm (a third of the resolution: about 60-80 x 44-53 x 29 voxels), patch
  48x48x32 (the official 112x112x80 field of view scaled alike, rounded to multiples of 16), VNet with 8
  filters, 1500 iterations (a quarter of 6000), the lr step and the consistency ramp shortened in the same
  proportion (lr x0.1 at 625 and 1250, ramp over 1480 iterations); evaluation at the original 0.625 mm, the
  model resampling in and out. Measured on an idle 2-core CPU (2026-11-27): 8-10 min of training (DTC)
  and 5 min (supervised), plus about 3 min for the three evaluations of each.
- full: the official configuration (0.625 mm, 112x112x80, 16 filters, 6000 iterations), official window grid.
Methods: `dtc` (16 labeled + 48 unlabeled, the DTC loss, the paper's recipe) and `supervised` (the same 16
labeled cases alone, Dice loss only: the paper's V-Net baseline), same seed and iteration budget;
`dtc+ema`, `dtc+intensity` and `dtc+ema+intensity` add the recipe switches --ema 0.99 and/or
--intensity-augmentation to `dtc`; `dtc+intensity+volume-levelset` adds --levelset-target volume to
`dtc+intensity`, `dtc+intensity+spatial` adds --spatial-augmentation to it, and
`dtc+intensity+spatial+low-contrast` adds --low-contrast-augmentation to that (today's default recipe),
`...+ce` adds the labeled items' cross-entropy to its loss (--ce-weight 1), and `...+poly` trains it with a
polynomial learning-rate decay (--lr-schedule poly), and `...+poly+consistency10` weights the dual-task
consistency 10x (--consistency 10), and `...+poly+bf16` trains it in bf16 autocast (--amp bf16);
`supervised+intensity+spatial+low-contrast` is `supervised` with the same three augmentations, and
`supervised+intensity+spatial+low-contrast+poly` with the poly schedule too. The ablations of the default
recipe's DTC add one switch each: `supervised+...+poly+levelset` (the level-set regression, no consistency),
`dtc+...+poly+unlabeled0` (the consistency on the labeled items only), `dtc+...+poly+consistency0` (unlabeled
items in the batches but in no loss: batch-norm statistics only), `dtc+...+poly+levelset0` (the consistency
without level-set regression), `supervised+...+poly+labeled-batch4` (4 labeled items per batch, as many as
DTC's 2 + 2) and `dtc+...+poly+rampup-step18` (the consistency ramp over half the lite protocol);
`supervised+...+poly+iterations3000` is the supervised-only partner of `dtc+...+poly+iterations3000`;
`dtc+...+poly+half-voxel` and `supervised+...+poly+levelset+half-voxel` move the level-set target's zero
level half a voxel outward (--levelset-boundary half-voxel), so that {z < 0} is the label;
`dtc+...+poly+cross-view` adds a FixMatch-like term (--cross-view 1): the two heads' agreement on an
unlabeled crop is the label of the same crop perturbed in intensity. Every
method states all augmentation switches and its learning-rate schedule (the official steps unless it says
`poly`), so it stays the same when a default changes. Run them with --methods.

Every model is also scored in `fast` mode with `--tta 8` (test-time orientation averaging, without
post-processing). Fast-mode scores use whole-volume windows (`--window-size volume`) and the arithmetic of
the first rows (fp32 on the CPU, fp16 on CUDA; the CPU default became int8 later), as when those were recorded.

A run folder that already holds a model is not trained again, and its evaluation files are reused (each
record names the device every evaluation ran on), so a benchmark stopped by a lease's end finishes on
another machine.

Writes benchmarks/results/la_accuracy_<protocol>.json (every run: command, metrics, time) and prints the
markdown rows for docs/benchmarks.md. A run that fails is recorded as failed, never dropped."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # la_runs beside this file, also where another script imports this one
from la_runs import SCORINGS, dtc, hardware, scoring_flags, train_and_score  # noqa: E402

from dtc_training.files import atomic_json_save  # noqa: E402

SPLITS = HERE / "splits"

PROTOCOLS = {
    "lite": ["--spacing", "1.875", "1.875", "1.875", "--patch", "48", "48", "32", "--n-filters", "8",
             "--iterations", "1500", "--lr-step", "625", "--rampup-step", "37"],
    "full": [],
}
AUGMENTATIONS = ("intensity", "spatial", "low-contrast")  # dtc train's --[no-]<name>-augmentation switches


def recipe(*on: str, lr_schedule: str = "step") -> list[str]:
    """Every augmentation switch and the learning-rate schedule stated, `on` turned on and the rest off:
    a method stays what it was whatever `dtc train` defaults to."""
    return [*(f"--{'' if name in on else 'no-'}{name}-augmentation" for name in AUGMENTATIONS),
            "--lr-schedule", lr_schedule]


SEMI = ["--unlabeled", "48"]
SUPERVISED = ["--unlabeled", "0", "--consistency", "0", "--levelset-weight", "0"]
DEFAULT_SWITCHES = recipe("intensity", "spatial", "low-contrast", lr_schedule="poly")  # dtc train's defaults
DEFAULT_RECIPE = [*SEMI, *DEFAULT_SWITCHES]
LEVELSET_REGRESSION = ["--unlabeled", "0", "--consistency", "0", *DEFAULT_SWITCHES]  # supervised + the level-set head
HALF_VOXEL = ["--levelset-boundary", "half-voxel"]
METHODS = {
    "dtc": [*SEMI, *recipe()],  # the paper's recipe
    "supervised": [*SUPERVISED, *recipe()],
    # today's default augmentations without the unlabeled scans: how much of the default's gain is DTC's
    "supervised+intensity+spatial+low-contrast": [*SUPERVISED, *recipe("intensity", "spatial", "low-contrast")],
    "supervised+intensity+spatial+low-contrast+poly": [*SUPERVISED, *recipe("intensity", "spatial", "low-contrast",
                                                                          lr_schedule="poly")],
    # recipe switches beyond the paper, weighed against `dtc` at the same iteration budget
    "dtc+ema": [*SEMI, "--ema", "0.99", *recipe()],
    "dtc+intensity": [*SEMI, *recipe("intensity")],
    "dtc+ema+intensity": [*SEMI, "--ema", "0.99", *recipe("intensity")],
    "dtc+intensity+volume-levelset": [*SEMI, *recipe("intensity"), "--levelset-target", "volume"],
    "dtc+intensity+spatial": [*SEMI, *recipe("intensity", "spatial")],
    "dtc+intensity+spatial+low-contrast": [*SEMI, *recipe("intensity", "spatial", "low-contrast")],
    # the labeled items' cross-entropy added to the loss (the official code computes it, logs it, and
    # leaves it out), on top of today's default recipe
    "dtc+intensity+spatial+low-contrast+ce": [*SEMI, *recipe("intensity", "spatial", "low-contrast"),
                                              "--ce-weight", "1"],
    # nnU-Net's polynomial learning-rate decay instead of the official x0.1 steps, on today's default recipe
    "dtc+intensity+spatial+low-contrast+poly": DEFAULT_RECIPE,
    # the dual-task consistency weighted 10x (final weight 10 instead of the official 1), on today's default:
    # at weight 1 the consistency term is under 2% of the loss for the first half of training
    "dtc+intensity+spatial+low-contrast+poly+consistency10": [*DEFAULT_RECIPE, "--consistency", "10"],
    # twice the full protocol's iterations (a full-protocol method): on a GPU with the level sets in the
    # training step, the time the default took before they moved there (7 min on an H200); its lite
    # counterpart, twice the lite protocol's, asks the same question on the CPU (at twice the time there)
    "dtc+intensity+spatial+low-contrast+poly+iterations12000": [*DEFAULT_RECIPE, "--iterations", "12000"],
    "dtc+intensity+spatial+low-contrast+poly+iterations3000": [*DEFAULT_RECIPE, "--iterations", "3000"],
    # its supervised-only partner: whether the budget, not the method, keeps DTC level with supervised-only
    "supervised+intensity+spatial+low-contrast+poly+iterations3000": [
        *SUPERVISED, *DEFAULT_SWITCHES, "--iterations", "3000"],
    # the default recipe in bf16 autocast: for CPUs that compute bf16 natively (AVX512-BF16, AMX), where
    # --amp auto stays in float32
    "dtc+intensity+spatial+low-contrast+poly+bf16": [*DEFAULT_RECIPE, "--amp", "bf16"],
    # Ablations of the default recipe's DTC (docs/benchmarks.md, "Why the default recipe's DTC does not beat
    # supervised: hypotheses"), each one switch away from a method above:
    # the level-set head and its regression without the consistency (the paper's "Seg + LSF")
    "supervised+intensity+spatial+low-contrast+poly+levelset": LEVELSET_REGRESSION,
    # the dual-task consistency on the labeled items only (the paper's "Seg + LSF + DTC" without unlabeled scans)
    "dtc+intensity+spatial+low-contrast+poly+unlabeled0": ["--unlabeled", "0", *DEFAULT_SWITCHES],
    # the unlabeled items in every batch but in no loss: they change only the batch-norm statistics
    "dtc+intensity+spatial+low-contrast+poly+consistency0": [*DEFAULT_RECIPE, "--consistency", "0"],
    # the consistency alone: no level-set regression, so the level-set head learns from the consistency only
    "dtc+intensity+spatial+low-contrast+poly+levelset0": [*DEFAULT_RECIPE, "--levelset-weight", "0"],
    # supervised-only with as many items per batch as DTC (4 labeled instead of 2 labeled + 2 unlabeled)
    "supervised+intensity+spatial+low-contrast+poly+labeled-batch4": [*SUPERVISED, *DEFAULT_SWITCHES,
                                                                      "--labeled-batch", "4"],
    # the consistency ramp over the first half of the lite protocol (37 -> 18 iterations per ramp step)
    "dtc+intensity+spatial+low-contrast+poly+rampup-step18": [*DEFAULT_RECIPE, "--rampup-step", "18"],
    # the level-set target negative on the atrium's inner boundary layer too (hypothesis 1): the consistency
    # no longer asks for 0.5 where the Dice loss asks for 1; with and without the consistency
    "dtc+intensity+spatial+low-contrast+poly+half-voxel": [*DEFAULT_RECIPE, *HALF_VOXEL],
    "supervised+intensity+spatial+low-contrast+poly+levelset+half-voxel": [*LEVELSET_REGRESSION, *HALF_VOXEL],
    # the heads' agreement on an unlabeled crop as the pseudo-label of its intensity-perturbed view (FixMatch-like)
    "dtc+intensity+spatial+low-contrast+poly+cross-view": [*DEFAULT_RECIPE, "--cross-view", "1"],
    # the labeled and unlabeled crops normalised by batch norm apart (ablation row 2 found the unlabeled crops'
    # presence in the batch, in no loss, costing Dice)
    "dtc+intensity+spatial+low-contrast+poly+split-batchnorm": [*DEFAULT_RECIPE, "--split-batchnorm"],
    # ... and with the unlabeled crops in no loss: against `...+levelset`, what is left of their cost once they
    # no longer share the labeled crops' batch statistics
    "dtc+intensity+spatial+low-contrast+poly+consistency0+split-batchnorm": [*DEFAULT_RECIPE, "--consistency", "0",
                                                                            "--split-batchnorm"],
}


def git_commit() -> str:
    # A copy without .git (a lent GPU machine gets the working tree only) names its commit in BENCHMARK_COMMIT.
    if os.environ.get("BENCHMARK_COMMIT"):
        return os.environ["BENCHMARK_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=HERE).stdout.strip() or "unknown"
    except OSError:  # no git on the machine
        return "unknown"


def write_model_result(kind: str, model: Path, cases: Path, **fields) -> Path:
    """benchmarks/results/<kind>_<run>.json (<run>: the model's folder name): a per-model benchmark's record,
    with the model, the case list, the commit and the date before its own fields."""
    result = {"model": str(model), "cases": str(cases), "commit": git_commit(), "date": time.strftime("%Y-%m-%d"),
              **fields}
    out = HERE / "results" / f"{kind}_{model.parent.name}.json"
    out.write_text(json.dumps(result, indent=2))
    return out


def train_command(protocol: str, method: str, seed: int, la_root: Path, run_dir: Path, device: str,
                  workers: int) -> list[str]:
    """`dtc train` of a method: the first 16 cases of the root's train.list labeled, the last 16 held out."""
    return dtc("train", "--la-root", str(la_root), "--labeled", "16", "--holdout", "16", "-o", str(run_dir),
               "--seed", str(seed), "--device", device, "--workers", str(workers), "--progress", "json",
               "--checkpoint-every", "100", *PROTOCOLS[protocol], *METHODS[method])


def run_one(protocol: str, method: str, seed: int, la_root: Path, out: Path, device: str, workers: int) -> dict:
    run_dir = out / f"{protocol}-{method}-seed{seed}"
    record = {"protocol": protocol, "method": method, "seed": seed,
              **train_and_score(run_dir, train_command(protocol, method, seed, la_root, run_dir, device, workers),
                                ["--la-root", str(la_root), "--cases", str(SPLITS / "la_validation.list"),
                                 "--device", device], scoring_flags(protocol, device))}
    for key in SCORINGS:  # this benchmark's records keep each case's Dice only
        if key in record:
            record[key]["per_case_dice"] = {case: m["dice"] for case, m in record[key].pop("per_case").items()}
    return record


def markdown_row(r: dict, hardware: str, commit: str) -> str:
    if r["status"] != "finished":
        return f"| {r['method']} | seed {r['seed']} | {r['status']} | | | | | | {hardware} | {commit} |"
    m, n = r["without_lcc"]["mean"], r["with_lcc"]["mean"]
    unlabeled = 0 if r["method"].startswith("supervised") else 48
    minutes = f"{r['train_seconds'] / 60:.0f} min" if r.get("train_seconds") is not None else "(not recorded)"
    return (f"| {r['method']} | 16 / {unlabeled} | {r['seed']} | {100 * m['dice']:.2f} ({100 * n['dice']:.2f}) | "
            f"{100 * m['jaccard']:.2f} ({100 * n['jaccard']:.2f}) | {m['hd95_voxels']:.2f} ({n['hd95_voxels']:.2f}) | "
            f"{m['asd_voxels']:.2f} ({n['asd_voxels']:.2f}) | {minutes} | {hardware} | {commit} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="lite")
    p.add_argument("--seeds", type=int, nargs="+", default=[1337, 2024])
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=["supervised", "dtc"])
    p.add_argument("--la-root", type=Path, default=HERE.parent.parent / "shared" / "data" / "LA")
    p.add_argument("--out", type=Path, default=HERE.parent / "runs" / "la_accuracy")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=-1, help="DataLoader workers of each training (-1: dtc's default)")
    p.add_argument("--results", type=Path, help="results JSON (default: benchmarks/results/la_accuracy_<protocol>.json)")
    args = p.parse_args()
    machine = hardware(args.device)
    commit = git_commit()
    results_file = args.results or HERE / "results" / f"la_accuracy_{args.protocol}.json"
    results_file.parent.mkdir(exist_ok=True)
    # earlier runs of other methods or seeds stay; a rerun of the same method and seed replaces its record
    runs = json.loads(results_file.read_text())["runs"] if results_file.exists() else []
    for seed in args.seeds:
        for method in args.methods:
            run = {**run_one(args.protocol, method, seed, args.la_root, args.out, args.device, args.workers),
                   "hardware": machine, "commit": commit, "date": time.strftime("%Y-%m-%d")}
            runs = [r for r in runs if (r["method"], r["seed"]) != (method, seed)] + [run]
            atomic_json_save({"host": platform.node(), "runs": runs}, results_file)  # a kill leaves the last one whole
            print(markdown_row(run, machine, commit), flush=True)
            if run["status"] == "finished":
                print(f"  {method} seed {seed}, fast mode with --tta 8: Dice {100 * run['fast_tta8']['mean']['dice']:.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
