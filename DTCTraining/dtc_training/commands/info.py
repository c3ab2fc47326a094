"""`dtc info`: print a model file's metadata, checked (read without executing anything; a safetensors
model file's from its header alone, without torch)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "show a DTC model file's metadata"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path)
    p.add_argument("--json", action="store_true", help="print the metadata as JSON")


def run(args) -> int:
    from ..model_io import read_metadata

    meta = read_metadata(args.model)
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    _print(meta, "")
    return 0


def _print(fields: dict, indent: str) -> None:
    """One line per field; a nested object (training data, provenance) as its own indented block."""
    width = max(map(len, fields), default=0)
    for key, value in fields.items():
        if isinstance(value, dict) and value:
            print(f"{indent}{key}:")
            _print(value, indent + "  ")
        else:
            print(f"{indent}{key.ljust(width)}  {json.dumps(value) if isinstance(value, (dict, list)) else value}")
