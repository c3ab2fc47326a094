"""One LA benchmark run, shared by la_accuracy.py (the development split) and cross_validation.py (its folds):
train a run folder with `dtc train` unless it holds a model already, then score the model with `dtc evaluate`
in each scoring whose file an earlier run has not left. A benchmark stopped part-way (a lease's end, a killed
job) thus goes on where it stopped: a checkpoint without a model resumes its training, finished evaluations
are read back (each record names the device every evaluation ran on)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dtc_training.checkpoint import CHECKPOINT_NAME

# The model file `dtc train` writes, under its current name or an earlier one: a folder trained before a
# rename still counts as trained.
MODEL_NAMES = ("model.safetensors", "model.pt")
# Scorings of the official protocol's evaluation (the paper's grid) and of the lite protocol's.
OFFICIAL = ["--mode", "official"]
SCORINGS = ("without_lcc", "with_lcc", "fast_tta8")


def model_file(run_dir: Path) -> Path | None:
    """The model a run folder holds, whichever name it was saved under; None before training has finished."""
    return next((run_dir / name for name in MODEL_NAMES if (run_dir / name).is_file()), None)


def dtc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dtc_training", *args]


def fast_flags(device: str) -> list[str]:
    """Fast mode as the first rows were scored: whole-volume windows (the rows predate patch-sized windows,
    docs/benchmarks.md "Window size"), fp32 on the CPU, fp16 on CUDA (the CPU default became int8 later)."""
    import torch

    on_cuda = device != "cpu" and torch.cuda.is_available()
    return ["--mode", "fast", "--window-size", "volume", "--precision", "fp16" if on_cuda else "fp32"]


def scoring_flags(protocol: str, device: str) -> dict[str, list[str]]:
    """`dtc evaluate` flags of each scoring: the protocol's own mode without and with largest-component
    post-processing, and fast mode with test-time orientation averaging over 8 orientations."""
    fast = fast_flags(device)
    scored = fast if protocol != "full" else OFFICIAL
    return {"without_lcc": scored, "with_lcc": [*scored, "--largest-component"], "fast_tta8": [*fast, "--tta", "8"]}


def hardware(device: str) -> str:
    import torch

    return (torch.cuda.get_device_name() if torch.cuda.is_available() and device != "cpu"
            else f"CPU x{torch.get_num_threads()}")


def planned_commands(run_dir: Path, train: list[str], evaluate: list[str], scorings: dict[str, list[str]]
                     ) -> list[list[str]]:
    """The commands `train_and_score` would run now, in order (for a dry run)."""
    model = model_file(run_dir)
    commands = [] if model else [_train_command(run_dir, train)]
    model = model or run_dir / MODEL_NAMES[0]  # the name it will have
    return commands + [_evaluate_command(model, run_dir, key, evaluate, flags) for key, flags in scorings.items()
                       if model_file(run_dir) is None or not (run_dir / f"evaluation-{key}.json").exists()]


def _train_command(run_dir: Path, train: list[str]) -> list[str]:
    resume = (run_dir / CHECKPOINT_NAME).exists() and model_file(run_dir) is None
    return [*train, "--resume"] if resume else train  # a killed benchmark continues where it stopped


def _evaluate_command(model: Path, run_dir: Path, key: str, evaluate: list[str], flags: list[str]) -> list[str]:
    return dtc("evaluate", "--model", str(model), *evaluate, "--json", str(run_dir / f"evaluation-{key}.json"),
               *flags)


def training_seconds(progress: Path) -> int | None:
    """The training's time from its progress log, summed over the stretches a resumed run trained in (the
    time between stops does not count); None where only a model came back from a lease."""
    if not progress.exists():
        return None
    events = [json.loads(line) for line in progress.read_text().splitlines() if line.strip()]
    starts = [i for i, e in enumerate(events) if e["event"] == "start"] or [0]
    ends = [*starts[1:], len(events)]
    return round(sum(events[end - 1]["time"] - events[begin]["time"] for begin, end in zip(starts, ends)))


def train_and_score(run_dir: Path, train: list[str], evaluate: list[str], scorings: dict[str, list[str]],
                    env: dict[str, str] | None = None) -> dict:
    """`train`: the whole `dtc train` command; `evaluate`: the `dtc evaluate` options that name the cases and
    the device; `env`: the commands' environment (None: this process's). Returns the run's record: the
    commands, the training time, each scoring's mean and per-case metrics, and its status ("finished", or why
    not: a failed run is recorded, never dropped)."""
    command = _train_command(run_dir, train)
    record = {"train_command": " ".join(command[1:])}
    if model_file(run_dir) is not None:  # trained before: re-evaluated
        record["trained_by_an_earlier_run"] = True
    else:
        for stale in run_dir.glob("evaluation-*.json"):  # scores of an earlier model in this folder
            stale.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
        # Straight into the file, not through a pipe: the log survives a stop, and a trainer stopped with
        # this process (the GPU driver signals the group) still saves its checkpoint instead of dying on
        # a broken pipe.
        with open(run_dir / "train.log", "w") as log:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        if code != 0 or model_file(run_dir) is None:
            tail = (run_dir / "train.log").read_text()[-2000:]
            return {**record, "status": f"training failed (exit {code})", "log": tail}
    record["train_seconds"] = training_seconds(run_dir / "progress.jsonl")
    for key, flags in scorings.items():
        result_file = run_dir / f"evaluation-{key}.json"
        command = _evaluate_command(model_file(run_dir), run_dir, key, evaluate, flags)
        if not result_file.exists():  # one finished before an interruption is kept (written atomically)
            proc = subprocess.run(command, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                return {**record, "status": f"evaluation failed (exit {proc.returncode})", "log": proc.stderr[-2000:]}
        result = json.loads(result_file.read_text())
        record[key] = {"mean": result["mean"], "per_case": {c["case"]: c for c in result["cases"]},
                       "command": " ".join(command[1:]), "device": result["settings"]["device"]}
    return {**record, "status": "finished"}
