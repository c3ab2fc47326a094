"""`dtc infer`: segment volumes with a DTC model; label maps keep each input's exact geometry."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..options import positive_float
from ..orientations import COUNTS
from ..precision import PRECISIONS

HELP = "segment volumes (NRRD, NIfTI, MHA, DICOM folders, folders of volumes) with a DTC model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                   help="volume file, DICOM series folder, or folder of volume files")
    p.add_argument("--model", type=Path, required=True, help="DTC model file (model.safetensors, or a .pt of earlier versions)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="label file for one input (by its suffix: .nrrd, .nii.gz, .mha, ...), else a folder "
                        "receiving <input>-label.nrrd per input")
    p.add_argument("--mode", choices=["fast", "official"], default="fast",
                   help="fast (default): few blended windows, BN folded; official: the official DTC window grid")
    p.add_argument("--window-size", choices=["patch", "volume"], default="patch",
                   help="fast-mode window size: patch (default: the training patch, the most accurate) or "
                        "volume (as large as --memory-gb allows, one pass when it fits: the fastest)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="fast-mode arithmetic: auto (default: fp16 on CUDA; int8 on an x86-64 CPU, 2-3x faster "
                        "than fp32 with labels within Dice ~0.995 of it; fp32 on other CPUs), fp32, fp16 (CUDA) "
                        "or int8 (CPU); official mode always computes in fp32")
    p.add_argument("--largest-component", action="store_true", help="keep the largest connected component only")
    p.add_argument("--tta", type=int, choices=COUNTS, default=1, metavar="N",
                   help="average over N in-plane orientations seen in training (1, 2, 4 or 8; N passes; default 1)")
    p.add_argument("--probability", action="store_true", help="also write <input>-probability maps")
    p.add_argument("--uncertainty", action="store_true",
                   help="also write <input>-doubt maps (where the two heads disagree, float32 in [0, 1], from the "
                        "same network passes) and each scan's doubt score in the log and report")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA if present; the CPU with --precision int8), cpu, cuda, cuda:N")
    p.add_argument("--memory-gb", type=positive_float,
                   help="activation memory for fast-mode windows (default: 2.5 on the CPU, 80%% of free GPU memory)")
    p.add_argument("--report", type=Path, help="write the per-input reports as JSON")


def run(args, models=None, answer=None) -> int:
    """`models` (from `dtc serve`) keeps the loaded model between calls; without it the model is loaded here.
    `answer` (from `dtc serve`): a dict that receives each input's doubt map and score, when asked for."""
    import logging

    from ..files import atomic_json_save, check_outputs
    from ..infer import Model, planned_files, segment_files
    from ..precision import inference_device, resolve_precision

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = inference_device(args.device, args.precision)
    model = models.get(args.model, device) if models is not None else Model.load(args.model, device)
    resolve_precision(args.precision, args.mode, model.device)  # refused before any input is read
    _, read, written = planned_files(args.inputs, args.output, args.probability, args.uncertainty)
    check_outputs(written + ([args.report] if args.report else []), [args.model, *read])
    reports = segment_files(args.inputs, model, args.output, probability=args.probability, mode=args.mode,
                            largest_component=args.largest_component, memory_gb=args.memory_gb,
                            window_size=args.window_size, orientations=args.tta, precision=args.precision,
                            uncertainty=args.uncertainty)
    if answer is not None and args.uncertainty:
        answer["doubt"] = [{key: r[key] for key in ("input", "doubt", "doubt_score")} for r in reports]
    if args.report:
        atomic_json_save({"model": str(args.model), "reports": reports}, args.report)
    return 0
