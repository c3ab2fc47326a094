"""The `--device` option: `auto`, `cpu`, `cuda` or `cuda:N`, turned into a torch.device, or refused with a
message before any work starts."""
from __future__ import annotations

import torch

from .errors import InputError


def resolve_device(requested: str | torch.device | None) -> torch.device:
    if requested is None or requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise InputError(f"--device {requested}: not a device this tool runs on; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {requested}: CUDA is not available in this PyTorch build or on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
