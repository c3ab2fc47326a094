"""`dtc info`: print a model file's metadata (read without executing anything)."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "show a DTC model file's metadata"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path)
    p.add_argument("--json", action="store_true", help="print the metadata as JSON")


def run(args) -> int:
    import json

    from ..model_io import read_metadata

    meta = read_metadata(args.model)
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    width = max(map(len, meta))
    for key, value in meta.items():
        print(f"{key.ljust(width)}  {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    return 0
