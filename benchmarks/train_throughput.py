"""Training throughput of the official DTC configuration (VNet-16, batch 2 labeled + 2 unlabeled,
112x112x80): this trainer (`dtc train`: the crops' level sets computed in DataLoader workers on the CPU,
in the training step on a GPU; bf16 on CUDA) against a loop that computes the level sets serially in the
main process, as the official code does; and the CPU seconds one batch of today's default recipe costs a
DataLoader worker, with and without the crops' level sets (what bounds a GPU run's steps per second).

    python benchmarks/train_throughput.py [--la-root ../shared/data/LA] [--iterations 5] [--device auto]

Prints one JSON object (iterations/s and peak memory of each) and appends it to benchmarks/results/."""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dtc_training.data import load_la
from dtc_training.levelset import compute_levelset
from dtc_training.losses import DTCLoss
from dtc_training.model import DualTaskVNet
from dtc_training.sampling import IterationBatches
from dtc_training.trainer import peak_memory_mb, select_device

HERE = Path(__file__).resolve().parent


def official_style(args, data, device) -> dict:
    """The official loop's shape: fp32, level sets of the labeled crops computed in the main process."""
    # the loop below computes the level sets, serially, as the official code does
    batches = IterationBatches(data.labeled, data.unlabeled, 2, 2, (112, 112, 80), seed=1337, iterations=10**6,
                               patch_levelsets=False)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=args.workers)
    model = DualTaskVNet().to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loss_fn = DTCLoss()
    times = []
    for t, batch in enumerate(loader):
        start = time.perf_counter()
        seg, levelset = model(batch["image"].to(device))
        target = np.stack([compute_levelset(m[0]) for m in batch["label"].numpy()])[:, None]
        terms = loss_fn(seg, levelset, batch["label"].to(device), torch.as_tensor(target).to(device), 2, t)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        if t + 1 == args.warmup + args.iterations:
            break
    return {"it_per_s": 1 / float(np.mean(times[args.warmup:])), "peak_memory_mb": peak_memory_mb(device)}


def this_trainer(args) -> dict:
    """`dtc train` itself, in a child process, reading its own it/s from the progress lines."""
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run(
            [sys.executable, "-m", "dtc_training", "train", "--la-root", str(args.la_root), "-o", out,
             "--iterations", str(args.warmup + args.iterations), "--device", args.device, "--progress", "json",
             "--workers", str(args.workers), "--checkpoint-every", "1000000", "--checkpoint-minutes", "0",
             "--no-intensity-augmentation", "--no-spatial-augmentation", "--no-low-contrast-augmentation"],
            capture_output=True, text=True, check=True)
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    stamps = [r["time"] for r in records if r["event"] == "progress"]
    rate = (len(stamps) - 1 - args.warmup) / (stamps[-1] - stamps[args.warmup])
    return {"it_per_s": rate, "peak_memory_mb": next(r for r in records if r["event"] == "done")["peak_memory_mb"]}


def worker_seconds_per_batch(args, data) -> dict:
    """One DataLoader worker's time for a batch of today's default recipe (1 thread, as in a worker)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seconds = {}
    for key, patch_levelsets in (("with_patch_levelsets", True), ("without", False)):
        batches = IterationBatches(data.labeled, data.unlabeled, 2, 2, (112, 112, 80), seed=1337, iterations=10**6,
                                   intensity_augmentation=True, spatial_augmentation=True,
                                   low_contrast_augmentation=True, patch_levelsets=patch_levelsets)
        start = time.perf_counter()
        for t in range(args.batches):
            batches[t]
        seconds[key] = (time.perf_counter() - start) / args.batches
    torch.set_num_threads(threads)
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--la-root", type=Path, default=HERE.parent.parent / "shared" / "data" / "LA")
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--batches", type=int, default=20, help="batches timed for the worker figure")
    args = p.parse_args()
    device = select_device(args.device)
    data = load_la(args.la_root, labeled=16, unlabeled=None, holdout=0, spacing=None)
    result = {
        "benchmark": "train_throughput",
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "config": "VNet-16, 2+2 x 112x112x80, LA h5",
        "iterations_timed": args.iterations,
        "this_trainer": this_trainer(args),
        "official_style_serial_levelset": official_style(args, data, device),
        "worker_seconds_per_batch": worker_seconds_per_batch(args, data),
    }
    result["speedup"] = result["this_trainer"]["it_per_s"] / result["official_style_serial_levelset"]["it_per_s"]
    print(json.dumps(result, indent=2))
    (HERE / "results").mkdir(exist_ok=True)
    with open(HERE / "results" / "train_throughput.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
