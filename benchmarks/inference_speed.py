"""Inference speed: `official` vs the default `fast` mode (windows of the training patch, `--precision auto`:
int8 on an x86-64 CPU, fp16 on CUDA) on one LA-sized volume with the same weights, plus `fast` in fp32,
`fast` with whole-volume windows (`--window-size volume`), `fast` averaged over 4 and 8 orientations
(`--tta`), one plain forward pass over the whole padded volume and a clinical full field of view
(576x576x88 at 0.625 mm) in each fast variant but `--tta`. Each measurement runs in its own process, so peak RSS is its own.

    python benchmarks/inference_speed.py --model MODEL.pt [--case ID] [--la-root DIR]
    python benchmarks/inference_speed.py --fit 150       # no model at hand: fit one quickly (see fit_model)
    python benchmarks/inference_speed.py --fit 300 --device cuda   # fits on the GPU too
    python benchmarks/inference_speed.py --model MODEL.pt --device cuda   # a GPU: each timed after a warm-up

Prints a JSON summary: wall time (model loading excluded since the eighth session, reported as
load_seconds; int8's one-off quantization with it), peak RSS, Dice between the official and each fast
label."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dtc_training import la
from dtc_training.infer import Model, segment
from dtc_training.metrics import dice
from dtc_training.model import DualTaskVNet
from dtc_training.model_io import load_model, save_model
from dtc_training.precision import resolve_precision

DEFAULT_LA = Path(__file__).resolve().parents[2] / "shared" / "data" / "LA"
VARIANTS = {  # segment() options of each timed variant
    "official": {"mode": "official"},
    "fast": {"mode": "fast"},  # the default: windows of the training patch, precision auto
    "fast-fp32": {"mode": "fast", "precision": "fp32"},  # the default until 2026-11-27 (on the CPU)
    "fast-volume": {"mode": "fast", "window_size": "volume"},
    "fast-tta4": {"mode": "fast", "orientations": 4},
    "fast-tta8": {"mode": "fast", "orientations": 8},
}


def peak_rss_gb() -> float:
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork+exec from the parent process.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e6  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def volume(args) -> np.ndarray:
    image, _ = la.read_case(args.la_root, args.case or la.read_case_list(args.la_root)[-1])
    if args.clinical:  # the LA crop inside a 576x576 field of view, background continued with noise
        field = np.random.default_rng(0).normal(-0.5, 0.3, (576, 576, image.shape[2])).astype(np.float32)
        x0, y0 = (576 - image.shape[0]) // 2, (576 - image.shape[1]) // 2
        field[x0:x0 + image.shape[0], y0:y0 + image.shape[1]] = image
        return field
    return image


def worker(args) -> dict:
    """One measurement in this process: a VARIANTS entry or `plain` (one eval forward, whole volume)."""
    torch.set_num_threads(args.threads) if args.threads else None
    array = volume(args)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    # Read before the clock starts (reported apart): a pipeline loads its model once for many scans.
    started = time.perf_counter()
    if args.worker == "plain":
        net, meta = load_model(args.model)
    else:
        model = Model.load(args.model, device)
        options = VARIANTS[args.worker]
        if resolve_precision(options.get("precision", "auto"), options["mode"], device) == "int8":
            model.int8  # quantized once per loaded model, like the load itself
    load_seconds = round(time.perf_counter() - started, 2)

    def run() -> dict:
        if args.worker == "plain":
            size = [max(-(-s // 16) * 16, p) for s, p in zip(array.shape, meta["patch_size"])]
            padded = np.zeros(size, np.float32)
            padded[tuple(slice(0, s) for s in array.shape)] = array
            with torch.no_grad(), torch.autocast("cuda", torch.float16, enabled=cuda):
                seg_logits, _ = net.to(device)(torch.from_numpy(padded)[None, None].to(device))
                seg_logits.cpu()  # waits for the GPU
            return {"window": size}
        result = segment(array, model, spacing=la.SPACING, normalize=False, **VARIANTS[args.worker])
        np.save(args.out, result.label)
        return {k: result.info[k] for k in ("windows", "window", "precision")}

    warmup = None
    if cuda:  # the first call pays CUDA's start-up and kernel selection: timed apart, then the second is timed
        started = time.perf_counter()
        run()
        warmup = round(time.perf_counter() - started, 2)
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    info = run()
    record = {"mode": args.worker, "device": str(device), "shape": list(array.shape),
              "seconds": round(time.perf_counter() - started, 2), "load_seconds": load_seconds,
              "peak_rss_gb": round(peak_rss_gb(), 2), **info}
    if cuda:
        record.update(first_call_seconds=warmup, peak_gpu_gb=round(torch.cuda.max_memory_allocated() / 1e9, 2))
    return record


def run_worker(args, mode: str, out: Path, clinical: bool = False) -> dict:
    command = [sys.executable, __file__, "--model", str(args.model), "--la-root", str(args.la_root),
               "--worker", mode, "--out", str(out)] + (["--case", args.case] if args.case else []) + \
              (["--clinical"] if clinical else []) + (["--threads", str(args.threads)] if args.threads else []) + \
              ["--device", args.device]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:  # the records printed so far stay in the output; this one says why it failed
        sys.exit(f"variant {mode}{' (clinical)' if clinical else ''} failed (exit {proc.returncode}):\n"
                 f"{proc.stderr[-3000:]}")
    record = json.loads(proc.stdout.splitlines()[-1])
    print(json.dumps({"variant": mode, "clinical": clinical, **record}), file=sys.stderr, flush=True)
    return record


def fit_model(root: Path, iterations: int, out: Path, device: torch.device) -> Path:
    """Quick supervised fit of the full-size network (16 filters): soft Dice on the segmentation head,
    Adam, batches of two 64x64x48 crops of the 16 labeled cases (70% centred on the atrium). Good enough
    to give a real segmentation to compare modes on; not a DTC result. Saved with the official patch."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cases = [la.read_case(root, i) for i in la.read_case_list(root)[:16]]
    net = DualTaskVNet(n_filters=16).to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    crop = np.array([64, 64, 48])
    for step in range(iterations):
        images, labels = [], []
        for image, label in (cases[i] for i in rng.integers(len(cases), size=2)):
            centre = np.argwhere(label)[rng.integers(label.sum())] if rng.random() < 0.7 else \
                rng.integers(crop // 2, np.array(image.shape) - crop // 2)
            start = np.clip(centre - crop // 2, 0, np.array(image.shape) - crop)
            window = tuple(slice(s, s + c) for s, c in zip(start, crop))
            images.append(image[window]), labels.append(label[window])
        x, y = (torch.from_numpy(np.stack(a))[:, None].float().to(device) for a in (images, labels))
        prob = torch.sigmoid(net(x)[0])
        loss = 1 - (2 * (prob * y).sum() + 1e-5) / ((prob ** 2).sum() + (y ** 2).sum() + 1e-5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            print(f"fit {step}/{iterations}: dice loss {loss.item():.3f}", file=sys.stderr, flush=True)
    meta = {"n_filters": 16, "in_channels": 1, "patch_size": [112, 112, 80], "spacing": list(la.SPACING),
            "normalization": "zscore", "k": 1500.0, "label_name": "Left atrium",
            "data": {"source": f"benchmarks/inference_speed.py --fit {iterations} (supervised Dice, 16 LA cases)"}}
    return save_model(out, net, meta)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path)
    p.add_argument("--fit", type=int, help="fit a model for this many iterations first (when no --model)")
    p.add_argument("--la-root", type=Path, default=DEFAULT_LA)
    p.add_argument("--case", help="LA case id (default: the last of train.list)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (on CUDA each variant is timed after one warm-up call)")
    p.add_argument("--worker", choices=[*VARIANTS, "plain"], help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--clinical", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model is None:
            if not args.fit:
                p.error("give --model, or --fit N to fit one")
            args.model = fit_model(args.la_root, args.fit, Path(f"benchmark-model-fit{args.fit}.safetensors"), torch.device(args.device))
        official = run_worker(args, "official", tmp / "official.npy")
        fast_names = ("fast", "fast-fp32", "fast-volume")
        fast = {name: run_worker(args, name, tmp / f"{name}.npy") for name in fast_names}
        tta = {n: run_worker(args, f"fast-tta{n}", tmp / f"fast-tta{n}.npy") for n in (4, 8)}
        plain = run_worker(args, "plain", tmp / "plain.npy")
        clinical = {name: run_worker(args, name, tmp / f"clinical-{name}.npy", clinical=True) for name in fast}
        labels = {name: np.load(tmp / f"{name}.npy").astype(bool) for name in ("official", *fast)}
    summary = {
        "model": str(args.model), "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch_threads": args.threads or torch.get_num_threads(),
        "official": official, **{name.replace("-", "_"): r for name, r in fast.items()}, "fast_tta4": tta[4],
        "fast_tta8": tta[8], "plain_forward": plain,
        **{f"clinical_{name.replace('-', '_')}": r for name, r in clinical.items()},
        **{f"speedup_{name.replace('-', '_')}_vs_official": round(official["seconds"] / r["seconds"], 1)
           for name, r in [*fast.items(), *((f"fast-tta{n}", tta[n]) for n in (4, 8))]},
        **{f"{name.replace('-', '_')}_vs_plain_forward": round(r["seconds"] / plain["seconds"], 2) for name, r in fast.items()},
        **{f"dice_official_vs_{name.replace('-', '_')}": round(dice(labels["official"], labels[name]), 5) for name in fast},
        "dice_fast_vs_fast_fp32": round(dice(labels["fast"], labels["fast-fp32"]), 5),
        "foreground_voxels": {name: int(label.sum()) for name, label in labels.items()},
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
