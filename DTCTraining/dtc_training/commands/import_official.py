"""`dtc import-official`: convert an official DTC checkpoint (state dict of vnet_sdf.VNet) to a model file."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..options import positive_float

HELP = "convert an official DTC .pth state dict into a DTC model file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="official .pth (e.g. dtc_16_aaai2021.pth); read weights-only")
    p.add_argument("-o", "--output", type=Path, required=True, help="model file to write")
    p.add_argument("--spacing", type=positive_float, nargs=3, metavar=("X", "Y", "Z"),
                   help="voxel spacing (mm) the model was trained at (LA: 0.625 0.625 0.625)")
    p.add_argument("--label-name", help='name of the structure ("Left atrium")')
    p.add_argument("--metadata", type=Path, metavar="JSON",
                   help="a JSON object of fields added to the model's metadata (e.g. its provenance and licence)")


def run(args) -> int:
    from ..files import check_outputs
    from ..model_io import import_official
    from .convert import read_extra_metadata

    extra = read_extra_metadata(args.metadata)
    check_outputs([args.output], [args.checkpoint, *([args.metadata] if args.metadata else [])])
    overrides = {**extra, **{k: v for k, v in (("spacing", args.spacing), ("label_name", args.label_name))
                             if v is not None}}
    path = import_official(args.checkpoint, args.output, **overrides)
    print(f"wrote {path}")
    return 0
