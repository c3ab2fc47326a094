"""Resumable training state: weights, optimizer, RNG and the next iteration, written atomically and
read back with `weights_only=True` (plain tensors and containers, no pickled code)."""
from __future__ import annotations

from pathlib import Path

import torch

from . import __version__
from .errors import InputError
from .files import atomic_torch_save

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: Path, iteration: int, model, optimizer, config: dict, data_summary: dict,
                    ema=None) -> Path:
    state = {
        "iteration": iteration,  # number of completed iterations = the next one to run
        "config": config,
        "data": data_summary,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        **({"ema": {k: v.detach().cpu() for k, v in ema.state_dict().items()}} if ema is not None else {}),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "dtc_training_version": __version__,
    }
    return atomic_torch_save(state, path)


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: no checkpoint to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, foreign or code-carrying file: all mean "cannot resume"
        raise InputError(f"{path}: checkpoint cannot be read ({e})") from None


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available() and len(state["cuda_rng"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
