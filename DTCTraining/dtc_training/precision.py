"""The arithmetic of fast-mode inference, `--precision`: auto (the default), fp32, fp16 (CUDA) or int8 (CPU).

`auto` picks, per device, the fastest arithmetic that leaves the accuracy where fp32 has it:
- CUDA: fp16 autocast;
- an x86-64 CPU: int8 (`quantization`): 2-3x faster than fp32 on the CPUs measured, labels within Dice
  ~0.995 of fp32's and the same accuracy against the ground truth on the 16 held-out LA cases
  (docs/benchmarks.md, "int8 on the CPU");
- any other CPU (ARM): fp32, since int8 3D convolutions there are not measured.

`official` mode always runs the unmodified network in fp32: it is the parity reference."""
from __future__ import annotations

import platform
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:  # torch is imported where it is used: the CLI lists these choices without loading it
    import torch

PRECISIONS = ("auto", "fp32", "fp16", "int8")
X86_64 = ("x86_64", "amd64")


def int8_by_default() -> bool:
    """Whether `auto` means int8 on this machine's CPU: x86-64 with one of torch's quantized engines for 3D
    convolutions."""
    from .quantization import available_engine

    return platform.machine().lower() in X86_64 and available_engine() is not None


def inference_device(requested: str, precision: str) -> str:
    """int8 is a CPU mode, so `--device auto` means the CPU for it."""
    return "cpu" if precision == "int8" and requested == "auto" else requested


def resolve_precision(precision: str, mode: str, device: torch.device) -> str:
    """The arithmetic a segmentation runs in: `precision` checked against the mode and device, `auto`
    resolved. InputError names what is wrong."""
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if mode == "official":
        if precision in ("fp16", "int8"):
            raise InputError(f"official mode is the fp32 parity reference: {precision} runs in fast mode only")
        return "fp32"
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "int8" if int8_by_default() else "fp32"
    if precision == "int8" and device.type != "cpu":
        raise InputError(f"int8 runs on the CPU only; on {device.type} use fp16 (auto) or fp32")
    if precision == "fp16" and device.type != "cuda":
        raise InputError("fp16 runs on CUDA only (CPUs compute it slowly); on the CPU use int8 (auto) or fp32")
    return precision
