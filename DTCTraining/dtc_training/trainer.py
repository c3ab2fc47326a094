"""The DTC training loop: one readable loop over iteration-indexed batches, with checkpoints that make
every run resumable and a graceful stop on SIGTERM/SIGINT/SIGHUP, a STOP file or a lost reader of its
progress output. Under torchrun every rank runs this loop on its own share of each global batch
(DistributedDataParallel, see `distributed`); rank 0 alone writes progress, checkpoints and the model, and
the ranks agree each iteration on whether to stop."""
from __future__ import annotations

import math
import os
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from . import __version__, distributed
from .batchnorm import GroupedForward, recalibrate_batchnorm, recalibrated_copy
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, restore_rng, save_checkpoint
from .config import TrainConfig
from .data import TrainingData
from .devices import autocast_bf16, native_bf16, resolve_device
from .distributed import DistributedError, World
from .divergence import finite_weights, stop_diverged
from .errors import InputError
from .files import atomic_json_save
from .losses import DTCLoss
from .model import DualTaskVNet
from .model_io import load_model, save_model
from .progress import ProgressReporter
from .sampling import IterationBatches, batch_levelsets
from .stopping import STOP_FILE, STOP_REASONS, StopRequest, leave_stopping_to_the_main_process
from .strong_view import strong_views
from .volumes import TRAINING_ORIENTATION
from .validation import validation_dice

MODEL_NAME = "model.safetensors"
PROGRESS_NAME, CONFIG_NAME = "progress.jsonl", "train_config.json"


def select_device(requested: str) -> torch.device:
    device = resolve_device(requested)
    if requested == "auto" and device.type == "cpu":
        warnings.warn("CUDA is not available: training on the CPU, which is far slower than a GPU")
    return device


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak GPU memory allocated by tensors, or the main process's peak RSS on the CPU (None where unknown)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:
        import resource  # not on Windows
    except ImportError:
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


def _default_workers() -> int:
    return min(4, max(1, (os.cpu_count() or 2) - 1))


def train(cfg: TrainConfig, data: TrainingData, out_dir: Path, resume: bool = False,
          progress_mode: str = "auto") -> int:
    """Train (or resume) a DTC model in `out_dir`; returns the CLI exit code. Started by torchrun, every
    rank calls this and joins the process group first; a lost peer ends it with a message, not a hang."""
    from .cli import EXIT_ERROR

    cfg.check()
    try:
        world = distributed.setup(select_device(cfg.device))
        with world.failures_explained():
            code = _train(cfg, data, out_dir, resume, progress_mode, world)
    except DistributedError as e:
        print(f"dtc train: error: {e}", file=sys.stderr, flush=True)
        distributed.leave_lost_world(EXIT_ERROR)
        return EXIT_ERROR
    world.close()
    return code


def _train(cfg: TrainConfig, data: TrainingData, out_dir: Path, resume: bool, progress_mode: str,
           world: World) -> int:
    from .cli import EXIT_INTERRUPTED, EXIT_OK

    device = world.device
    if cfg.sync_batchnorm and world.size > 1 and device.type != "cuda":
        raise InputError("--sync-batchnorm: PyTorch's SyncBatchNorm works on CUDA devices only")
    checkpoint_path = out_dir / CHECKPOINT_NAME
    state = load_checkpoint(checkpoint_path) if resume else None
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    use_bf16 = autocast_bf16(cfg.amp, device)
    if use_bf16 and device.type == "cpu" and not native_bf16(device):
        warnings.warn("--amp bf16 on a CPU without bf16 instructions (AVX512-BF16 or AMX): honoured, but it "
                      "emulates bf16, about 100x slower than float32")

    model = DualTaskVNet(n_filters=cfg.n_filters).to(device)
    if state is None and cfg.init is not None:  # a fine-tuning starts from its model; a resume from its checkpoint
        model.load_state_dict(load_model(cfg.init["path"])[0].state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # The moving average also covers batch-norm statistics (use_buffers), so it is a complete model.
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    start = 0
    if state is not None:
        if world.is_main:
            _warn_if_other_data(state["data"], data.summary())
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        restore_rng(state)
        start = state["iteration"]  # global iterations: a different number of ranks just continues
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last_3d)
    # `net` trains; `model` (the same weights) is saved
    net = world.wrap(GroupedForward(model, cfg.labeled_batch) if cfg.split_batchnorm else model, cfg.sync_batchnorm)
    loss_fn = DTCLoss(cfg.k, cfg.levelset_weight, cfg.consistency, cfg.consistency_rampup, cfg.rampup_step,
                      cfg.ce_weight, cfg.cross_view)

    batches = IterationBatches(data.labeled, data.unlabeled, cfg.labeled_batch, cfg.unlabeled_batch,
                               cfg.patch_size, cfg.seed, cfg.iterations, world.rank, world.size,
                               cfg.intensity_augmentation, cfg.levelset_target, cfg.spatial_augmentation,
                               cfg.low_contrast_augmentation,
                               # a GPU step outruns a few CPU cores computing the crops' level sets
                               patch_levelsets=device.type == "cpu", levelset_boundary=cfg.levelset_boundary)
    workers = _default_workers() if cfg.workers < 0 else cfg.workers
    loader = DataLoader(batches, batch_size=None, sampler=range(start, cfg.iterations), num_workers=workers,
                        pin_memory=device.type == "cuda",
                        worker_init_fn=leave_stopping_to_the_main_process if workers else None,
                        # its own generator, so the loader never draws from the RNG that dropout uses
                        generator=torch.Generator().manual_seed(cfg.seed))
    progress = ProgressReporter(out_dir / PROGRESS_NAME, progress_mode, enabled=world.is_main)
    if world.is_main:
        atomic_json_save({"config": cfg.to_dict(), "data": data.summary(), "ranks": world.size,
                          "dtc_training_version": __version__}, out_dir / CONFIG_NAME)
    stop = StopRequest(out_dir / STOP_FILE, progress)
    progress.emit("start", iteration=start, total=cfg.iterations, device=str(device), bf16=use_bf16,
                  workers=workers, cpu_threads=torch.get_num_threads(), resumed=resume, ranks=world.size,
                  backend=world.backend, **data.summary())
    check_every = distributed.check_replicas_every() if world.size > 1 else 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()

    saved = {"iteration": start, "time": time.monotonic()}

    def checkpoint(iteration: int) -> Path:
        if world.is_main:  # rank 0 alone writes; the other ranks never wait for it, so may judge "due" apart
            save_checkpoint(checkpoint_path, iteration, model, optimizer, cfg.to_dict(), data.summary(), ema)
            progress.emit("checkpoint", iteration=iteration, path=str(checkpoint_path))
        saved.update(iteration=iteration, time=time.monotonic())
        return checkpoint_path

    def checkpoint_due(iteration: int) -> bool:
        # by iterations, and by time: a CPU iteration can take 20 s, so 500 of them would be hours to lose
        return iteration % cfg.checkpoint_every == 0 or (
            cfg.checkpoint_minutes > 0 and time.monotonic() - saved["time"] >= 60 * cfg.checkpoint_minutes)

    final = ema.module if ema is not None else model  # what is validated and saved

    def precise_bn_images():  # fresh batches after the last iteration, the same for every run and validation point
        return (batches[cfg.iterations + i]["image"] for i in range(cfg.precise_bn))

    val_dice, t0, done = None, time.perf_counter(), start
    try:
        net.train()
        for batch in loader:
            iteration = batch["iteration"]
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr_at(iteration)
            if world.rank:  # its own dropout masks, drawn per iteration so that a resumed run draws the same
                # (rank 0's generator state is in the checkpoint; its weights reach the others through DDP)
                torch.manual_seed(int(np.random.SeedSequence([cfg.seed, world.rank, iteration]).generate_state(1)[0]))
            image = batch["image"].to(device, non_blocking=True)
            n_items = image.shape[0]
            if cfg.cross_view and n_items > cfg.labeled_batch:  # the unlabeled crops' strong views join the forward
                image = torch.cat([image, strong_views(image[cfg.labeled_batch:], cfg.seed, iteration, world.rank)])
            if device.type == "cuda":
                image = image.contiguous(memory_format=torch.channels_last_3d)
            with autocast:
                seg_logits, levelset = net(image)
            label = batch["label"].to(device, non_blocking=True)
            targets = batch_levelsets(batch, label, cfg.levelset_boundary)
            terms = loss_fn(seg_logits[:n_items], levelset[:n_items], label, targets, cfg.labeled_batch, iteration,
                            strong_logits=seg_logits[n_items:])
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)

            done = iteration + 1
            terms, reason, finite = _agree(world, terms, stop.requested, finite_weights(model))
            if not finite:  # before any checkpoint of these weights
                last = saved["iteration"] if saved["iteration"] > 0 else None
                return stop_diverged(progress, done, terms, cfg.lr, checkpoint_path if last else None, last,
                                     world.is_main)
            rate = (done - start) / (time.perf_counter() - t0)
            progress.emit("progress", iteration=done, total=cfg.iterations, **terms, lr=cfg.lr_at(iteration),
                          it_per_s=round(rate, 4), eta_s=round((cfg.iterations - done) / rate, 1))
            if check_every and done % check_every == 0:
                progress.emit("replicas", iteration=done, weights=world.check_replicas(model, done))
            if data.validation and cfg.val_every and done % cfg.val_every == 0 and done < cfg.iterations:
                # with --precise-bn, mid-run points see the statistics the final model will have
                validated = recalibrated_copy(final, precise_bn_images(), device) if cfg.precise_bn else final
                val_dice = _validate(validated, data, cfg, world, progress, done)
            if reason or checkpoint_due(done):
                path = checkpoint(done)
                if reason:
                    progress.emit("stopped", iteration=done, checkpoint=str(path), reason=reason)
                    world.barrier()  # no rank exits before rank 0 has written the checkpoint
                    if world.is_main:
                        stop.honoured()
                    return EXIT_INTERRUPTED
        if saved["iteration"] != done:
            checkpoint(done)
        if cfg.precise_bn:
            recalibrate_batchnorm(final, precise_bn_images(), device)
            progress.emit("precise_bn", batches=cfg.precise_bn)
        if data.validation:
            val_dice = _validate(final, data, cfg, world, progress, done)
        code = EXIT_OK
        if world.is_main and not finite_weights(final):  # statistics that --precise-bn recomputed
            code = stop_diverged(progress, done, {}, cfg.lr, checkpoint_path, done, True)
        elif world.is_main:
            model_path = save_model(out_dir / MODEL_NAME, final, _metadata(cfg, data, done, val_dice))
            progress.emit("done", model=str(model_path), iterations=done, val_dice=val_dice,
                          peak_memory_mb=peak_memory_mb(device))
        world.barrier()
        return code
    finally:
        stop.restore()
        progress.close()


def _agree(world: World, terms: dict, reason: str | None,
           finite: torch.Tensor) -> tuple[dict, str | None, bool]:
    """The loss terms averaged over the ranks, a stop reason if any rank has one, and whether the loss terms
    and every rank's weights are finite, so that all ranks stop after the same iteration (a rank leaving
    alone would leave the others waiting for it); one exchange for all."""
    names = list(terms)
    values = world.sum([terms[k] for k in names] + [finite] + [float(reason == r) for r in STOP_REASONS])
    reasons = [r for r, n in zip(STOP_REASONS, values[len(names) + 1:]) if n]
    finite = values[len(names)] == world.size and all(math.isfinite(v) for v in values[:len(names)])
    return ({k: v / world.size for k, v in zip(names, values)}, (reason or (reasons[0] if reasons else None)),
            finite)


def _warn_if_other_data(trained_on: dict, now: dict) -> None:
    """A resume on other data (another datalist given by mistake, or cases added) is allowed, but its
    batches are no longer those of an uninterrupted run: say so."""
    groups = ("labeled", "unlabeled", "validation")
    if any(trained_on.get(group) != now[group] for group in groups):
        before, after = (", ".join(f"{d.get(group)} {group}" for group in groups) for d in (trained_on, now))
        warnings.warn(f"resuming on other data than the checkpoint was trained on ({before}; now {after}): "
                      "the run goes on, but not as an uninterrupted run on either would")


def _validate(model, data, cfg, world: World, progress, iteration) -> float:
    """Mean validation Dice; the ranks share the cases, all using rank 0's batch-norm statistics."""
    model.eval()
    world.broadcast_buffers(model)
    mine = data.validation[world.rank::world.size]
    dice = validation_dice(model, mine, cfg.patch_size, world.device, cfg.n_filters) if mine else 0.0
    if world.size > 1:
        dice = world.sum([dice * len(mine)])[0] / len(data.validation)
    model.train()
    progress.emit("validation", iteration=iteration, dice=round(dice, 5))
    return dice


def _metadata(cfg: TrainConfig, data: TrainingData, iterations: int, val_dice: float | None) -> dict:
    return {
        "n_filters": cfg.n_filters,
        "in_channels": 1,
        "patch_size": list(cfg.patch_size),
        "spacing": data.spacing,
        "orientation": TRAINING_ORIENTATION,
        "normalization": "zscore",
        "la_zscore": cfg.la_zscore,
        "k": cfg.k,
        "label_name": cfg.label_name,
        "data": data.summary(),
        "iterations": iterations,
        "validation_dice": val_dice,
        "config": cfg.to_dict(),
        "init": cfg.init,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
