"""int8 fast mode with each of torch's quantized engines that has 3D convolutions (oneDNN, x86, FBGEMM),
against fp32 fast mode, on one LA case and this machine's CPU: which engine `quantization` should prefer.

    python benchmarks/int8_engines.py --model MODEL.pt [--case ID] [--la-root DIR] [--threads 2]

Per engine: the one-off quantization time, the fast-mode time (the best of --repeats calls after a warm-up),
the label Dice against fp32 fast mode and against the ground truth. Prints JSON; `--json` saves it."""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from dtc_training import la
from dtc_training.infer import THRESHOLD, Model
from dtc_training.metrics import dice
from dtc_training.quantization import ENGINES, quantized_copy
from dtc_training.sliding_window import predict_fast, window_sides

DEFAULT_LA = Path(__file__).resolve().parents[2] / "shared" / "data" / "LA"


def time_fast(network, image: np.ndarray, model: Model, repeats: int) -> tuple[float, np.ndarray]:
    patch = model.meta["patch_size"]

    def call():  # as segment() calls it in the default fast mode (windows of the training patch)
        return predict_fast(network, image, patch, torch.device("cpu"), model.meta["n_filters"],
                            max_sides=window_sides(patch, "patch"))[0]

    call()  # warm-up: oneDNN builds its kernels on the first call
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        prob = call()
        seconds.append(time.perf_counter() - started)
    return round(min(seconds), 2), prob > THRESHOLD


def cpu_flags() -> list[str]:
    """The CPU's vector-instruction flags that decide int8 speed (Linux; empty elsewhere)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags.split(":")[1].split() if f.startswith(("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx")))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--la-root", type=Path, default=DEFAULT_LA)
    p.add_argument("--case", help="LA case id (default: the last of train.list, as inference_speed.py)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    case = args.case or la.read_case_list(args.la_root)[-1]
    image, truth = la.read_case(args.la_root, case)
    model = Model.load(args.model, "cpu")
    seconds, reference = time_fast(model.folded, image, model, args.repeats)
    result = {"model": str(args.model), "case": case, "cpu": platform.processor() or platform.machine(),
              "cpu_flags": cpu_flags(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
              "fp32": {"seconds": seconds, "dice_truth": round(dice(reference, truth), 4)}}
    for engine in (e for e in ENGINES if e in torch.backends.quantized.supported_engines):
        started = time.perf_counter()
        network = quantized_copy(model.folded, engine)
        quantize = round(time.perf_counter() - started, 2)
        seconds, label = time_fast(network, image, model, args.repeats)
        result[engine] = {"quantize_seconds": quantize, "seconds": seconds,
                          "speedup_vs_fp32": round(result["fp32"]["seconds"] / seconds, 2),
                          "dice_vs_fp32": round(dice(label, reference), 4), "dice_truth": round(dice(label, truth), 4)}
        print(json.dumps({engine: result[engine]}), flush=True)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
