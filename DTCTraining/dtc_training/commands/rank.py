"""`dtc rank`: segment scans and list them by the two heads' doubt, most doubtful first: the scans worth
correcting first. The score is `dtc infer --uncertainty`'s (docs/inference.md, "Doubt")."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..orientations import COUNTS
from ..precision import PRECISIONS

HELP = "segment scans and list them by the model's doubt, most doubtful first (the ones to correct first)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, metavar="SCAN",
                   help="volume file, DICOM series folder, or folder of volume files")
    p.add_argument("--model", type=Path, required=True, help="DTC model file")
    p.add_argument("--json", type=Path, help="also write the ranking as JSON")
    p.add_argument("--tta", type=int, choices=COUNTS, default=1, metavar="N",
                   help="average over N in-plane orientations, as dtc infer --tta (default 1)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="as dtc infer --precision (default auto)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")


def ranked(reports: list[dict]) -> list[dict]:
    """Most doubtful first. A scan where neither head finds any foreground has no score and comes first of
    all: the model found nothing there to agree on, which is worth a look before anything else."""
    return sorted(reports, key=lambda r: (r["doubt_score"] is not None, -(r["doubt_score"] or 0.0)))


def run(args) -> int:
    import logging
    import time

    from ..files import atomic_json_save, check_outputs
    from ..infer import Model, check_all_inputs, collect_inputs, score_text, segment
    from ..precision import inference_device, resolve_precision
    from ..volumes import read_image

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger(__name__)
    volumes = collect_inputs(args.inputs)
    if args.json:
        check_outputs([args.json], [args.model, *volumes])
    model = Model.load(args.model, inference_device(args.device, args.precision))
    resolve_precision(args.precision, "fast", model.device)
    if len(volumes) > 1:
        check_all_inputs(volumes)  # every bad scan named before the first is segmented
    reports = []
    for i, source in enumerate(volumes, 1):
        started = time.perf_counter()
        result = segment(read_image(source), model, uncertainty=True, orientations=args.tta,
                         precision=args.precision, name=str(source))
        reports.append({"input": str(source), "doubt_score": result.doubt_score,
                        "foreground_voxels": result.info["foreground_voxels"]})
        log.info("%d/%d %s: doubt %s (%.1f s)", i, len(volumes), source, score_text(result.doubt_score),
                 time.perf_counter() - started)
    ranking = [{"rank": i, **r} for i, r in enumerate(ranked(reports), 1)]
    print(f"{'rank':>4}  {'doubt':>6}  {'foreground':>10}  scan (most doubtful first: correct these first)")
    for r in ranking:
        score = "-" if r["doubt_score"] is None else f"{r['doubt_score']:.4f}"
        print(f"{r['rank']:>4}  {score:>6}  {r['foreground_voxels']:>10}  {r['input']}")
    if args.json:
        atomic_json_save({"model": str(args.model), "ranking": ranking}, args.json)
    return 0
