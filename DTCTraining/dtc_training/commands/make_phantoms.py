"""`dtc make-phantoms`: synthetic LA-like phantoms with labels and a datalist."""
from __future__ import annotations

from pathlib import Path

from ..options import int_at_least, nonnegative_int, positive_float, positive_int

HELP = "write synthetic LA-like MRI phantoms (NRRD) with labels and a datalist.json"


def add_arguments(p) -> None:
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--count", type=positive_int, default=12)
    p.add_argument("--labeled", type=positive_int, default=4, help="first N are labeled in the datalist (4)")
    p.add_argument("--validation", type=nonnegative_int, default=2, help="last N are validation cases (2)")
    p.add_argument("--size", type=int_at_least(2), nargs=3, default=[96, 96, 64], metavar=("X", "Y", "Z"))
    p.add_argument("--spacing", type=positive_float, nargs=3, default=[1.25, 1.25, 1.25], metavar=("X", "Y", "Z"))
    p.add_argument("--seed", type=nonnegative_int, default=0)


def run(args) -> int:
    from ..errors import InputError
    from ..files import check_writable_dir
    from ..phantoms import write_phantoms

    if args.labeled + args.validation > args.count:
        raise InputError(f"--count {args.count} cannot hold {args.labeled} labeled + {args.validation} validation")
    check_writable_dir(args.output)
    path = write_phantoms(args.output, args.count, args.labeled, args.validation, tuple(args.size),
                          tuple(args.spacing), args.seed)
    print(f"wrote {args.count} phantoms and {path}")
    return 0
