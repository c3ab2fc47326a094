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
`supervised+intensity+spatial+low-contrast+poly` with the poly schedule too. Every
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
SPLITS = HERE / "splits"

PROTOCOLS = {
    "lite": ["--spacing", "1.875", "1.875", "1.875", "--patch", "48", "48", "32", "--n-filters", "8",
             "--iterations", "1500", "--lr-step", "625", "--rampup-step", "37"],
    "full": [],
}
# Fast-mode evaluations keep whole-volume windows, as every recorded row was measured before patch-sized
# windows became dtc's default (docs/benchmarks.md, "Window size"), so that rows stay comparable.
OFFICIAL = ["--mode", "official"]


def fast_flags(device: str) -> list[str]:
    """Fast mode as the first rows were scored: whole-volume windows, fp32 on the CPU, fp16 on CUDA."""
    import torch

    on_cuda = device != "cpu" and torch.cuda.is_available()
    return ["--mode", "fast", "--window-size", "volume", "--precision", "fp16" if on_cuda else "fp32"]
AUGMENTATIONS = ("intensity", "spatial", "low-contrast")  # dtc train's --[no-]<name>-augmentation switches


def recipe(*on: str, lr_schedule: str = "step") -> list[str]:
    """Every augmentation switch and the learning-rate schedule stated, `on` turned on and the rest off:
    a method stays what it was whatever `dtc train` defaults to."""
    return [*(f"--{'' if name in on else 'no-'}{name}-augmentation" for name in AUGMENTATIONS),
            "--lr-schedule", lr_schedule]


SEMI = ["--unlabeled", "48"]
SUPERVISED = ["--unlabeled", "0", "--consistency", "0", "--levelset-weight", "0"]
DEFAULT_RECIPE = [*SEMI, *recipe("intensity", "spatial", "low-contrast", lr_schedule="poly")]  # dtc train's default
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
    # the default recipe in bf16 autocast: for CPUs that compute bf16 natively (AVX512-BF16, AMX), where
    # --amp auto stays in float32
    "dtc+intensity+spatial+low-contrast+poly+bf16": [*DEFAULT_RECIPE, "--amp", "bf16"],
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


def dtc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dtc_training", *args]


def run_one(protocol: str, method: str, seed: int, la_root: Path, out: Path, device: str, workers: int) -> dict:
    run_dir = out / f"{protocol}-{method}-seed{seed}"
    train = dtc("train", "--la-root", str(la_root), "--labeled", "16", "--holdout", "16", "-o", str(run_dir),
                "--seed", str(seed), "--device", device, "--workers", str(workers), "--progress", "json",
                "--checkpoint-every", "100",
                *PROTOCOLS[protocol], *METHODS[method])
    if (run_dir / "checkpoint.pt").exists() and not (run_dir / "model.pt").exists():
        train.append("--resume")  # a killed benchmark continues where it stopped
    record = {"protocol": protocol, "method": method, "seed": seed, "train_command": " ".join(train[1:])}
    started = time.time()
    if (run_dir / "model.pt").exists():  # trained before: re-evaluated, its training time read from its log
        log = run_dir / "progress.jsonl"  # absent where only a model came back from a lease
        events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        record.update(train_seconds=round(events[-1]["time"] - events[0]["time"]) if events else None,
                      trained_by_an_earlier_run=True)
    else:
        for stale in run_dir.glob("evaluation-*.json"):  # scores of an earlier model in this folder
            stale.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
        # Straight into the file, not through a pipe: the log survives a stop, and a trainer stopped with
        # this process (the GPU driver signals the group) still saves its checkpoint instead of dying on
        # a broken pipe.
        with open(run_dir / "train.log", "w") as log:
            code = subprocess.run(train, stdout=log, stderr=subprocess.STDOUT).returncode
        if code != 0:
            tail = (run_dir / "train.log").read_text()[-2000:]
            return {**record, "status": f"training failed (exit {code})", "log": tail}
        record["train_seconds"] = round(time.time() - started)
    fast = fast_flags(device)
    scored = fast if protocol == "lite" else OFFICIAL
    evaluations = {"without_lcc": scored, "with_lcc": [*scored, "--largest-component"],
                   "fast_tta8": [*fast, "--tta", "8"]}  # orientation averaging
    for key, flags in evaluations.items():
        result_file = run_dir / f"evaluation-{key}.json"
        evaluate = dtc("evaluate", "--model", str(run_dir / "model.pt"), "--la-root", str(la_root),
                       "--cases", str(SPLITS / "la_validation.list"), "--device", device,
                       "--json", str(result_file), *flags)
        if not result_file.exists():  # one finished before an interruption is kept (written atomically)
            proc = subprocess.run(evaluate, capture_output=True, text=True)
            if proc.returncode != 0:
                return {**record, "status": f"evaluation failed (exit {proc.returncode})", "log": proc.stderr[-2000:]}
        result = json.loads(result_file.read_text())
        record[key] = {"mean": result["mean"], "per_case_dice": {c["case"]: c["dice"] for c in result["cases"]},
                       "command": " ".join(evaluate[1:]), "device": result["settings"]["device"]}
    return {**record, "status": "finished"}


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
    import torch

    hardware = (torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu"
                else f"CPU x{torch.get_num_threads()}")
    commit = git_commit()
    results_file = args.results or HERE / "results" / f"la_accuracy_{args.protocol}.json"
    results_file.parent.mkdir(exist_ok=True)
    # earlier runs of other methods or seeds stay; a rerun of the same method and seed replaces its record
    runs = json.loads(results_file.read_text())["runs"] if results_file.exists() else []
    for seed in args.seeds:
        for method in args.methods:
            run = {**run_one(args.protocol, method, seed, args.la_root, args.out, args.device, args.workers),
                   "hardware": hardware, "commit": commit, "date": time.strftime("%Y-%m-%d")}
            runs = [r for r in runs if (r["method"], r["seed"]) != (method, seed)] + [run]
            results_file.write_text(json.dumps({"host": platform.node(), "runs": runs}, indent=2))
            print(markdown_row(run, hardware, commit), flush=True)
            if run["status"] == "finished":
                print(f"  {method} seed {seed}, fast mode with --tta 8: Dice {100 * run['fast_tta8']['mean']['dice']:.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
