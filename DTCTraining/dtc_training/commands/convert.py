"""`dtc convert`: rewrite a DTC model file (e.g. a `.pt` of earlier versions) as a safetensors model file."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "rewrite a DTC model file (e.g. an earlier model.pt) as a safetensors model file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="DTC model file to read (read weights-only)")
    p.add_argument("-o", "--output", type=Path, required=True, help="safetensors model file to write")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="weights stored as fp32 (default) or fp16 (half the size; loaded back as float32)")
    p.add_argument("--metadata", type=Path, metavar="JSON",
                   help="a JSON object of fields merged into the model's metadata (e.g. its provenance)")


def read_extra_metadata(path: Path | None) -> dict:
    """The JSON object of `--metadata`, or an InputError naming the file."""
    from ..errors import InputError

    if path is None:
        return {}
    try:
        extra = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(extra, dict):
        raise InputError(f"{path}: holds a JSON {type(extra).__name__}, not an object of metadata fields")
    return extra


def run(args) -> int:
    from ..files import check_outputs
    from ..model_io import convert_model

    extra = read_extra_metadata(args.metadata)
    check_outputs([args.output], [args.model, *([args.metadata] if args.metadata else [])])
    path = convert_model(args.model, args.output, args.precision, extra)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0
