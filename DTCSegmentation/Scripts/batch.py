"""DTCSegmentation batch script: the module's logic without its panel.

    Slicer --no-main-window --python-script DTCSegmentation/Scripts/batch.py -- segment --model M -o OUT IN...
    python DTCSegmentation/Scripts/batch.py segment --model M -o OUT IN...        (plain Python + slicer-core)

  segment  --model NAME|FILE -o OUTDIR [--mode fast|official] [--window-size patch|volume] [--precision P]
           [--device D] [--memory-gb G] [--tta N] [--no-largest-component] [--timeout S] INPUT...
           writes OUTDIR/<input name>.seg.nrrd (one "Left atrium" segment on the input's geometry) per input
  train    --labeled IMAGE:LABEL [...] [--unlabeled IMAGE ...] -o OUTDIR [--iterations N] [--patch X Y Z]
           [--n-filters N] [--device D] [--store-name NAME] ...
           exports the volumes through the scene (as the panel does), runs `dtc train`, optionally adds the
           model to the model store

Exit codes: 0 success, 1 a job failed (a file that could not be written whole included), 2 bad arguments
or input (an output that is one of the inputs included), 3 training stopped (resumable), 4 training diverged
(its last good checkpoint is kept; resume with a lower --lr).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for candidate in (HERE.parent, HERE.parent.parent):  # source tree / installed extension layouts
    if (candidate / "DTCSegmentationLib").is_dir() and str(candidate) not in sys.path:
        sys.path.insert(0, str(candidate))


TRAINING_OPTIONS = [  # batch.py option, TrainingParameters field, type ("finite": dtc's finite_float)
    ("--recipe", "recipe", str), ("--iterations", "iterations", int), ("--labeled-batch", "labeledBatch", int),
    ("--unlabeled-batch", "unlabeledBatch", int), ("--patch", "patchSize", int), ("--lr", "learningRate", "finite"),
    ("--k", "k", "finite"), ("--n-filters", "nFilters", int), ("--device", "device", str),
    ("--precision", "precision", str),
    ("--val-fraction", "valFraction", "finite"), ("--val-every", "valEvery", int),
]


def _parser() -> argparse.ArgumentParser:
    from DTCSegmentationLib.Parameters import (MODES, ORIENTATION_COUNTS, PRECISIONS, RECIPES, TRAINING_PRECISIONS,
                                               WINDOW_SIZES, TrainingParameters)
    # the backend's option types, so that a value dtc would refuse is refused here as it is parsed
    from dtc_training.options import finite_float, nonnegative_float, positive_float

    p = argparse.ArgumentParser(prog="batch.py", description="DTCSegmentation batch processing")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("segment", help="segment volumes into .seg.nrrd files")
    s.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    s.add_argument("--model", required=True, help="model store name or model file path")
    s.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    s.add_argument("--mode", choices=MODES, default="fast")
    s.add_argument("--window-size", choices=WINDOW_SIZES, default="patch",
                   help="fast mode: patch (the training patch, most accurate) or volume (fastest)")
    s.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="fast-mode arithmetic: auto (default: fp16 on CUDA, int8 on an x86-64 CPU), fp32, fp16, int8")
    s.add_argument("--device", default="auto")
    s.add_argument("--memory-gb", type=nonnegative_float, default=0.0, help="0: what the device has")
    s.add_argument("--tta", type=int, choices=ORIENTATION_COUNTS, default=1, help="test-time orientations (passes)")
    s.add_argument("--no-largest-component", action="store_true")
    s.add_argument("--timeout", type=positive_float, default=None, help="seconds per input")
    t = sub.add_parser("train", help="train a model from labeled and unlabeled volume files")
    t.add_argument("--labeled", nargs="+", default=[], metavar="IMAGE:LABEL")
    t.add_argument("--unlabeled", nargs="*", default=[], metavar="IMAGE")
    t.add_argument("-o", "--output", type=Path, required=True, help="training run folder")
    t.add_argument("--resume", action="store_true", help="continue the run in OUTPUT")
    t.add_argument("--store-name", help="add the trained model to the model store under this name")
    # Unset options keep the panel's defaults, or with --resume the run's own parameters (of which dtc train
    # lets --iterations, --device, --precision, --val-every and --lr change).
    d = TrainingParameters()
    choices = {"recipe": RECIPES, "precision": tuple(TRAINING_PRECISIONS)}
    for option, field, kind in TRAINING_OPTIONS:
        t.add_argument(option, dest=field, type=finite_float if kind == "finite" else kind,
                       nargs=3 if field == "patchSize" else None,
                       choices=choices.get(field), help=f"default {getattr(d, field)}")
    t.add_argument("--timeout", type=positive_float, default=None,
                   help="seconds; then the run stops with a checkpoint (exit 3) and --resume continues it")
    return p


def _stem(path: Path) -> str:
    """The file name without its image suffix (scan.v2.nii.gz -> scan.v2)."""
    name = path.name
    for suffix in (".seg.nrrd", ".nii.gz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.suffix else name


def _segment(args) -> int:
    from DTCSegmentationLib import SceneIO
    from DTCSegmentationLib.InferenceLogic import InferenceLogic
    from DTCSegmentationLib.Parameters import SegmentParameters
    from dtc_training.files import WriteError, check_outputs

    params = SegmentParameters(device=args.device, mode=args.mode, windowSize=args.window_size,
                               precision=args.precision, memoryGb=args.memory_gb, orientations=args.tta,
                               largestComponent=not args.no_largest_component)
    inputs = []
    for path in args.inputs:
        inputs += sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    outputs = [args.output / f"{_stem(path)}.seg.nrrd" for path in inputs]
    clashes = sorted({out.name for out in outputs if outputs.count(out) > 1})
    logic, failures = InferenceLogic(), 0
    try:
        if clashes:
            raise ValueError(f"several inputs would be written to {', '.join(clashes)}; segment them separately")
        check_outputs(outputs, inputs)  # none replaces an input; the folder is made (an InputError otherwise)
        logic.store.readMetadata(logic.store.resolve(args.model))  # refused once, before any input
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, output in zip(inputs, outputs):
        scene = SceneIO.scene()
        try:
            volume = SceneIO.readVolume(path)
            job = logic.segment(volume, args.model, params=params, timeout=args.timeout)
            out = SceneIO.writeSegmentation(job.segmentationNode, output)
            print(f"{path} -> {out}", flush=True)
        except WriteError as e:  # not the input's fault: the disk's
            print(f"error: {e}", file=sys.stderr, flush=True)
            failures += 1
        except (OSError, ValueError) as e:
            print(f"error: {path}: {e}", file=sys.stderr, flush=True)
            if len(inputs) == 1:
                return 2
            failures += 1
        except (RuntimeError, TimeoutError) as e:
            print(f"error: {path}: segmentation failed: {e}", file=sys.stderr, flush=True)
            failures += 1
        finally:
            scene.Clear(0)
    if failures:
        print(f"{failures} of {len(inputs)} inputs failed", file=sys.stderr)
        return 1
    return 0


def _train(args) -> int:
    import dataclasses
    import json

    from DTCSegmentationLib import SceneIO
    from DTCSegmentationLib.ModelStore import ModelStore
    from DTCSegmentationLib.Parameters import LabeledPair, TrainingParameters
    from DTCSegmentationLib.Process import EXIT_DIVERGED
    from DTCSegmentationLib.TrainingLogic import TrainingLogic

    given = {field: tuple(v) if isinstance(v, list) else v
             for _, field, _ in TRAINING_OPTIONS if (v := getattr(args, field)) is not None}
    logic = TrainingLogic()
    try:
        if args.resume:
            job = logic.reopen(args.output)
            job.params = dataclasses.replace(job.params, **given)
            job = logic.resume(job)
        else:
            params = TrainingParameters(**given)
            if not args.labeled:
                raise ValueError("give --labeled IMAGE:LABEL ... (or --resume)")
            pairs = []
            for item in args.labeled:
                image, sep, label = item.rpartition(":")
                if not sep:
                    raise ValueError(f"{item}: write IMAGE:LABEL")
                pairs.append(LabeledPair(SceneIO.readVolume(image), SceneIO.readVolume(label, labelmap=True)))
            unlabeled = [SceneIO.readVolume(p) for p in args.unlabeled]
            job = logic.start(pairs, unlabeled, params, args.output)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    last = [-1]

    def report(event):
        if event["event"] == "progress" and event["iteration"] // max(1, job.monitor.total // 20) != last[0]:
            last[0] = event["iteration"] // max(1, job.monitor.total // 20)
            print(job.monitor.statusText(), flush=True)
        elif event["event"] in ("validation", "stopped", "done"):
            print(json.dumps(event), flush=True)

    try:
        logic.wait(job, timeout=args.timeout, onEvent=report)
    except KeyboardInterrupt:
        logic.stop(job, grace=60)
        logic.wait(job)
    except TimeoutError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3 if job.state == "stopped" else 1
    if job.state == "stopped":
        print(job.message, file=sys.stderr)
        return 3
    if job.returnCode == EXIT_DIVERGED:
        print(f"error: {job.message}", file=sys.stderr)
        return EXIT_DIVERGED
    if job.state != "done":
        print(f"error: training failed: {job.message}\n{job.logTail(15)}", file=sys.stderr)
        return 1
    print(f"model: {job.modelPath}")
    if args.store_name:
        info = ModelStore().importModel(job.modelPath, args.store_name)
        print(f"added to the model store as {info.name!r} ({info.folder})")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # Slicer --python-script batch.py -- ARGS
        argv = argv[1:]
    args = _parser().parse_args(argv)
    return _segment(args) if args.command == "segment" else _train(args)


if __name__ == "__main__":
    code = main()
    try:
        import slicer

        if getattr(slicer, "app", None) is not None:  # inside Slicer: leave the application
            slicer.util.exit(code)
    except ImportError:
        pass
    sys.exit(code)
