"""Argparse types for numeric options, shared by every `dtc` command and the Slicer module's batch script: a
value that is not a finite number in its range (NaN, inf, a negative timeout, a zero spacing) is refused as
the command line is parsed, with argparse's one line `dtc COMMAND: error: argument --OPTION: ...` and exit
code 2, before any file is read. Ranges that depend on other options stay with the command."""
from __future__ import annotations

import argparse
import math


def _number(kind: type, text: str, minimum: float | None, exclusive: bool = False):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: not {'an integer' if kind is int else 'a number'}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text}: must be a finite number")
    if minimum is not None and (value < minimum or (exclusive and value == minimum)):
        bound = "positive" if (exclusive and minimum == 0) else f"at least {minimum:g}"
        raise argparse.ArgumentTypeError(f"{text}: must be {bound}")
    return value


def finite_float(text: str) -> float:
    return _number(float, text, None)


def positive_float(text: str) -> float:
    return _number(float, text, 0, exclusive=True)


def nonnegative_float(text: str) -> float:
    return _number(float, text, 0)


def int_at_least(minimum: int):
    """An integer type with a lower bound (1: a count; 2: a volume side, which needs two voxels)."""
    def integer(text: str) -> int:
        return _number(int, text, minimum)

    integer.__name__ = f"int_at_least_{minimum}"
    return integer


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)
