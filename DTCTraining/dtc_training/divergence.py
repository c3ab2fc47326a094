"""A training that diverges stops at once. A loss or weight that became NaN or infinite (mostly a learning rate
too high for the data) would otherwise train on to a model that labels every voxel as foreground; instead
nothing of the diverged run is saved (its last good checkpoint stays, no model is written) and the run ends
with EXIT_DIVERGED and a line that suggests a lower learning rate."""
from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path
from typing import Optional

import torch


def finite_weights(module: torch.nn.Module) -> torch.Tensor:
    """Whether every weight and batch-norm statistic is finite, as a 0-d tensor on their device, which the
    caller reads together with the loss (no wait of its own): a NaN or an infinity anywhere makes the sum of
    its tensor so, in one read of the weights without the boolean copy an elementwise isfinite would make."""
    tensors = [t for t in itertools.chain(module.parameters(), module.buffers()) if t.is_floating_point()]
    with torch.no_grad():
        return torch.stack([t.sum() for t in tensors]).sum().isfinite()


def stop_diverged(progress, iteration: int, terms: dict, lr: float, checkpoint: Optional[Path],
                  checkpoint_iteration: Optional[int], main: bool) -> int:
    """Report the divergence (a `diverged` event and one line on stderr, from rank 0) and return its exit code."""
    from .cli import EXIT_DIVERGED

    bad = {name: value for name, value in terms.items() if not math.isfinite(value)}
    what = (f"the loss became {bad['loss']}" if "loss" in bad else
            f"{', '.join(f'{name} = {value}' for name, value in bad.items())}" if bad else
            "the weights became NaN or infinite")
    lower = f"{lr / 10:g}"
    if checkpoint is not None:
        kept = (f"the checkpoint of iteration {checkpoint_iteration} ({checkpoint}) is kept and no model was "
                f"written. Lower the learning rate (--lr {lr:g} now): --resume --lr {lower} continues from that "
                f"checkpoint, --overwrite --lr {lower} starts again")
    else:
        kept = (f"no checkpoint or model was written. Start again with a lower learning rate (--lr {lr:g} now), "
                f"e.g. --lr {lower}")
    message = f"the training diverged at iteration {iteration}: {what}. Nothing of it was saved: {kept}."
    progress.emit("diverged", iteration=iteration, **terms, checkpoint=str(checkpoint) if checkpoint else None,
                  checkpoint_iteration=checkpoint_iteration, message=message)
    if main:
        print(f"dtc train: error: {message}", file=sys.stderr, flush=True)
    return EXIT_DIVERGED
