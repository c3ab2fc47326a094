"""`dtc evaluate`: Dice, Jaccard, HD95 and ASD (voxels and mm, medpy semantics) per case and on average."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..options import positive_int
from ..orientations import COUNTS
from ..precision import PRECISIONS

HELP = "score predictions against ground truth, from files or by running a model over LA h5 cases"


def add_arguments(p: argparse.ArgumentParser) -> None:
    files = p.add_argument_group("from files")
    files.add_argument("--pred", nargs="+", type=Path, help="prediction files, or a folder (paired by case name)")
    files.add_argument("--gt", nargs="+", type=Path, help="ground-truth files in the same order, or a folder")
    model = p.add_argument_group("from a model over the UA-MT h5 layout")
    model.add_argument("--model", type=Path, help="DTC model file")
    model.add_argument("--la-root", type=Path, help="folder with '2018LA_Seg_Training Set' and the case lists")
    model.add_argument("--cases", default="test.list",
                       help="case list: a file, or a list name beside the cases folder (test.list)")
    model.add_argument("--max-cases", type=positive_int, help="only the first N cases of the list")
    model.add_argument("--mode", choices=["fast", "official"], default="fast")
    model.add_argument("--window-size", choices=["patch", "volume"], default="patch",
                       help="fast-mode window size: patch (default) or volume (see dtc infer)")
    model.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="fast-mode arithmetic: auto (default), fp32, fp16 (CUDA) or int8 (CPU); see dtc infer")
    model.add_argument("--tta", type=int, choices=COUNTS, default=1, metavar="N",
                       help="average over N in-plane orientations seen in training (1, 2, 4 or 8)")
    model.add_argument("--device", default="auto",
                       help="auto (CUDA if present; the CPU with --precision int8), cpu, cuda, cuda:N")
    p.add_argument("--largest-component", action="store_true",
                   help="keep the largest connected component of each prediction before scoring")
    p.add_argument("--json", type=Path, help="write per-case and mean results as JSON")
    p.add_argument("--csv", type=Path, help="write per-case and mean results as CSV")


def run(args) -> int:
    from .. import evaluate as ev
    from ..errors import InputError
    from ..files import check_outputs
    from ..la import case_path, layout_root
    from ..precision import inference_device, resolve_precision

    from_files, from_model = bool(args.pred or args.gt), bool(args.model or args.la_root)
    if from_files == from_model:
        raise InputError("give either --pred and --gt, or --model and --la-root")
    outputs = [out for out in (args.json, args.csv) if out]
    settings = {"largest_component": args.largest_component}
    if from_files:
        if not (args.pred and args.gt):
            raise InputError("--pred and --gt go together")
        pairs = ev.pair_files(args.pred, args.gt)
        check_outputs(outputs, [f for pair in pairs for f in pair])
        cases = ev.evaluate_files(pairs, largest_component=args.largest_component)
    else:
        if not (args.model and args.la_root):
            raise InputError("--model and --la-root go together")
        from ..infer import Model  # torch and MONAI: only to run a model

        case_ids = _case_ids(args.la_root, args.cases)[: args.max_cases]
        check_outputs(outputs, [args.model, Path(args.cases), layout_root(args.la_root) / args.cases,
                                *(case_path(args.la_root, case_id) for case_id in case_ids)])
        model = Model.load(args.model, inference_device(args.device, args.precision))
        precision = resolve_precision(args.precision, args.mode, model.device)  # auto: what it will run in
        settings.update(model=str(args.model), mode=args.mode, orientations=args.tta, device=str(model.device),
                        precision=precision)
        if args.mode == "fast":
            settings.update(window_size=args.window_size)
        cases = ev.evaluate_model(model, args.la_root, case_ids, mode=args.mode, window_size=args.window_size,
                                  largest_component=args.largest_component, orientations=args.tta,
                                  precision=precision)
    result = ev.report(cases, settings)
    print(ev.format_table(result))
    if args.json:
        ev.save_json(result, args.json)
    if args.csv:
        ev.save_csv(result, args.csv)
    return 0


def _case_ids(root: Path, cases: str) -> list[str]:
    """A bare name is first looked up as a list of the layout (beside the cases folder); a path, or a bare
    name the layout lacks, is a file of case ids."""
    from ..la import layout_root, read_case_list

    path = Path(cases)
    bare = path.name == cases
    if (bare and (layout_root(root) / cases).is_file()) or not path.is_file():
        return read_case_list(root, cases)
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
