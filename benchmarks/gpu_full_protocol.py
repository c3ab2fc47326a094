"""The full protocol on a lent GPU within a fixed time: `la_accuracy.py --protocol full` for several methods
at once, one process each (its own results file and log), so one short device lease trains them side by
side on the GPU's spare capacity and the machine's cores.

    python benchmarks/gpu_full_protocol.py --la-root /tmp/LA --seconds 540 --out $OUT \\
        --methods dtc dtc+intensity+spatial supervised

Methods are in priority order. Every 15 s the driver projects each training's end from its progress.jsonl;
when one would end past the deadline (less the time its evaluation needs), it stops the lowest-priority
training still running, which gives the others the GPU and the CPU. At the deadline every training still
running is stopped and reported with the iteration it reached: nothing that did not finish is presented as
finished. Writes summary.json (each run's status, iterations, s/iteration, the la_accuracy record) and
runs.tar.gz (every run's logs and evaluations) to --out, summary.json on every poll too, and both when the
driver is ended early (SIGTERM from a command timeout); with --split-models, the first finished model too, in
parts under 16 MiB (the device tool brings back 8 files of up to 16 MiB; rejoin them with `cat`)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from la_accuracy import METHODS  # noqa: E402  (validated before any training starts)
EVALUATION_SECONDS = 150  # three `dtc evaluate` passes over the 16 held-out cases; the official one took 47 s on an H200
PART_BYTES = 15 * 2**20
FULL_ITERATIONS = 6000  # the full protocol's; a method may train longer (its progress events say)


class Progress(NamedTuple):
    done: int  # iterations done
    total: int  # the training's iterations (the full protocol's until it reports them)
    rate: float | None  # seconds per iteration over the run so far past its first 50 iterations


def progress(run_dir: Path) -> Progress:
    log = run_dir / "progress.jsonl"
    events = []
    for line in log.read_text().splitlines() if log.exists() else []:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:  # the line the training is writing right now
            continue
    starts = [i for i, e in enumerate(events) if e["event"] == "start"]
    events = events[starts[-1]:] if starts else events  # this session of a resumed run: its own speed
    steps = [e for e in events if e["event"] == "progress"]
    if not steps:
        return Progress(0, FULL_ITERATIONS, None)
    early = next((e for e in steps if e["iteration"] >= 50), None)
    last = steps[-1]
    if early is None or last["iteration"] - early["iteration"] < 20:
        return Progress(last["iteration"], last["total"], None)
    rate = (last["time"] - early["time"]) / (last["iteration"] - early["iteration"])
    return Progress(last["iteration"], last["total"], rate)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def summarise(args, run_dir: dict, status: dict, workers: int) -> list[dict]:
    """Each method's status, iterations and record so far; written to --out on every poll, so whatever ends
    this driver (its deadline, a command timeout, an error) leaves the latest state behind."""
    summary = []
    for m in args.methods:
        done, _, rate = progress(run_dir[m])
        results = args.runs / f"{m}.json"
        try:
            record = json.loads(results.read_text())["runs"][-1] if results.exists() else None
        except (json.JSONDecodeError, KeyError, IndexError):  # being written right now
            record = None
        summary.append({"method": m, "status": status.get(m) or (record or {}).get("status", "no result"),
                        "iterations": done, "seconds_per_iteration": rate, "workers": workers, "record": record})
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(args.out / "summary.json")
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--la-root", type=Path, required=True)
    p.add_argument("--methods", nargs="+", required=True, choices=sorted(METHODS), help="in priority order")
    p.add_argument("--seconds", type=float, required=True, help="everything, evaluation included, ends by then")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers per training (default: cores split)")
    p.add_argument("--runs", type=Path, default=Path("/tmp/full-protocol-runs"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--split-models", action="store_true", help="bring back the first finished model, in parts")
    args = p.parse_args()
    deadline = time.time() + args.seconds
    workers = args.workers or max(2, ((os.cpu_count() or 4) - len(args.methods)) // len(args.methods))
    processes, status = {}, {}
    run_dir = {m: args.runs / f"full-{m}-seed{args.seed}" for m in args.methods}
    # The device tool ends an over-long command with SIGTERM: stop the trainings and write the outputs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    args.runs.mkdir(parents=True, exist_ok=True)
    try:
        for method in args.methods:
            command = [sys.executable, str(HERE / "la_accuracy.py"), "--protocol", "full", "--methods", method,
                       "--seeds", str(args.seed), "--la-root", str(args.la_root), "--out", str(args.runs),
                       "--workers", str(workers), "--results", str(args.runs / f"{method}.json")]
            with open(args.runs / f"{method}.log", "w") as log:  # the child keeps its own copy of the handle
                processes[method] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                     start_new_session=True)
            print(f"started {method} ({workers} workers)", flush=True)
        while any(proc.poll() is None for proc in processes.values()):
            time.sleep(15)
            now = time.time()
            report = {m: progress(run_dir[m]) for m in args.methods}
            print(f"{now - deadline + args.seconds:5.0f} s: " + ", ".join(
                f"{m} {r.done} it ({r.rate or 0:.3f} s/it)" for m, r in report.items()), flush=True)
            running = [m for m in args.methods if processes[m].poll() is None]
            training = [m for m in running if report[m].done < report[m].total]
            late = [m for m in training if report[m].rate and
                    now + (report[m].total - report[m].done) * report[m].rate + EVALUATION_SECONDS > deadline]
            if now >= deadline:
                for m in running:
                    stop(processes[m])
                    status[m] = ("trained, then stopped at the deadline during its evaluations"
                                 if report[m].done >= report[m].total else
                                 f"stopped at the deadline after {report[m].done} of {report[m].total} iterations")
            elif late and len(training) > 1:
                victim = training[-1]
                stop(processes[victim])
                status[victim] = f"stopped after {report[victim][0]} iterations to let the others finish in time"
                print(f"stopped {victim}: {status[victim]}", flush=True)
            summarise(args, run_dir, status, workers)
    finally:
        for m, proc in processes.items():
            if proc.poll() is None:
                stop(proc)
                status.setdefault(m, f"stopped when the driver ended, after {progress(run_dir[m]).done} iterations")
        summary = summarise(args, run_dir, status, workers)
        with tarfile.open(args.out / "runs.tar.gz", "w:gz") as tar:
            tar.add(args.runs, arcname="runs",
                    filter=lambda t: None if t.name.endswith((".pt", ".safetensors", ".part")) else t)
        if args.split_models:  # one model: two (6 parts of 15 MiB) would not fit what a device call brings back
            for m in [m for m in args.methods if (run_dir[m] / "model.safetensors").exists()][:1]:
                data = (run_dir[m] / "model.safetensors").read_bytes()
                for i in range(0, len(data), PART_BYTES):
                    (args.out / f"{m.replace('+', '_')}.model.safetensors.{i // PART_BYTES}").write_bytes(data[i:i + PART_BYTES])
        print(json.dumps([{k: s[k] for k in ("method", "status", "iterations", "seconds_per_iteration")}
                          for s in summary], indent=2))


if __name__ == "__main__":
    main()
