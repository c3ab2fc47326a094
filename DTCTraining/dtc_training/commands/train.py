"""`dtc train`: train a DTC model from a datalist or the LA h5 layout."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..config import LA_ZSCORES, LR_SCHEDULES, RECIPES
from ..options import finite_float, nonnegative_int, positive_float

HELP = "train a Dual-task Consistency model (semi-supervised) from a datalist or the LA h5 layout"

# Options that `--resume` may change; everything else comes from the checkpoint's configuration.
RESUME_OVERRIDES = ("iterations", "device", "workers", "val_every", "checkpoint_every", "checkpoint_minutes", "amp",
                    "precise_bn", "lr")  # lr: a diverged run resumes from its last good checkpoint with a lower one


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("data (one of)")
    src.add_argument("--datalist", type=Path, help="decathlon-style JSON: labeled/training, unlabeled, validation")
    src.add_argument("--la-root", type=Path, help="UA-MT h5 layout (folder with train.list)")
    p.add_argument("--labeled", type=nonnegative_int,
                   help="LA: first N cases of train.list are labeled (16; on --resume, the run's own)")
    p.add_argument("--unlabeled", type=nonnegative_int,
                   help="LA: the next N cases are unlabeled (the rest; on --resume, the run's own)")
    p.add_argument("--holdout", type=int,
                   help="LA: the last N cases are held out for validation (0; on --resume, the run's own)")
    p.add_argument("-o", "--output", type=Path, required=True, help="run folder (checkpoint.pt, model.safetensors, logs)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --output that holds one (its checkpoint and model are replaced)")
    p.add_argument("--init", type=Path, dest="init_model", metavar="MODEL",
                   help="fine-tune this model file: its architecture, patch, spacing and k come with it, the "
                        "optimizer starts fresh; fine-tuning defaults apply (docs/training.md)")
    p.add_argument("--progress", choices=["auto", "json", "bar"], default="auto",
                   help="JSON lines on stdout, or a bar (auto: bar on a terminal)")
    p.add_argument("--foreground-value", type=finite_float, help="label value of the structure (default: any nonzero)")
    p.add_argument("--val-fraction", type=finite_float, default=0.0, help="hold out this share of the labeled cases")
    cfg = p.add_argument_group("training (defaults: the official DTC configuration, but for the lr schedule and"
                               " the augmentations; see docs/training.md)")
    cfg.add_argument("--recipe", choices=sorted(RECIPES), default="default",
                     help="paper: the official recipe (no augmentation beyond rotations and flips, x0.1 lr steps); "
                          "the switches below override it")
    cfg.add_argument("--iterations", type=int)
    cfg.add_argument("--labeled-batch", type=int)
    cfg.add_argument("--unlabeled-batch", type=int)
    cfg.add_argument("--patch", type=int, nargs=3, dest="patch_size", metavar=("X", "Y", "Z"))
    cfg.add_argument("--n-filters", type=int)
    cfg.add_argument("--lr", type=finite_float)
    cfg.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                     help="poly (default): (1 - t/T)^0.9 down to 0; step: x0.1 every --lr-step iterations (official)")
    cfg.add_argument("--lr-step", type=int, help="iterations per x0.1 step of the step schedule (2500)")
    cfg.add_argument("--k", type=finite_float, help="task-transform steepness (1500)")
    cfg.add_argument("--levelset-weight", type=finite_float, help="beta (0.3)")
    cfg.add_argument("--consistency", type=finite_float, help="final consistency weight (1.0)")
    cfg.add_argument("--consistency-rampup", type=finite_float, help="ramp length in ramp steps (40)")
    cfg.add_argument("--rampup-step", type=int, help="iterations per ramp step (150)")
    cfg.add_argument("--seed", type=int)
    cfg.add_argument("--device", help="auto (CUDA if present), cpu, cuda, cuda:N")
    cfg.add_argument("--amp", choices=["auto", "bf16", "off"], help="auto: bf16 on CUDA, off on the CPU")
    cfg.add_argument("--workers", type=int, help="DataLoader workers (-1: min(4, cores - 1))")
    cfg.add_argument("--val-every", type=int, help="validation Dice every N iterations (0: at the end only)")
    cfg.add_argument("--checkpoint-every", type=int, help="checkpoint every N iterations (500)")
    cfg.add_argument("--checkpoint-minutes", type=finite_float, metavar="M",
                     help="and whenever M minutes have passed since the last checkpoint (10; 0: off)")
    cfg.add_argument("--spacing", type=positive_float, nargs=3, metavar=("X", "Y", "Z"),
                     help="resample to this spacing (mm)")
    cfg.add_argument("--la-zscore", choices=LA_ZSCORES,
                     help="LA h5 images: stored (z-scored over the whole scan, then cropped; official) or crop "
                          "(z-scored again over the crop, as dtc infer and the panel treat a user's scan or ROI)")
    cfg.add_argument("--label-name", help='name of the structure ("Left atrium")')
    cfg.add_argument("--precise-bn", type=int, metavar="BATCHES",
                     help="recompute batch-norm statistics without dropout over N batches at the end (0: off)")
    cfg.add_argument("--ema", type=finite_float, metavar="DECAY",
                     help="keep an exponential moving average of the weights (e.g. 0.99) and save it as the model")
    cfg.add_argument("--intensity-augmentation", action=argparse.BooleanOptionalAction, default=None,
                     help="randomise brightness, contrast, gamma and noise (default on; not in the official method)")
    cfg.add_argument("--spatial-augmentation", action=argparse.BooleanOptionalAction, default=None,
                     help="random rotations (up to 15 degrees) and scaling (0.85-1.15) of 30%% of the crops (default on; not in the official method)")
    cfg.add_argument("--low-contrast-augmentation", action=argparse.BooleanOptionalAction, default=None,
                     help="scale the intensities of 20%% of the crops by 0.2-1.0, as in low-contrast scans (default on; not in the official method)")
    cfg.add_argument("--ce-weight", type=finite_float, metavar="W",
                     help="add W x the labeled items' cross-entropy to the loss (default 0: the official code logs it only)")
    cfg.add_argument("--cross-view", type=finite_float, metavar="W",
                     help="add W x the cross-entropy of the unlabeled crops' intensity-perturbed views against "
                          "the two heads' agreement, on the consistency's ramp (default 0: off; not in the paper)")
    cfg.add_argument("--split-batchnorm", action=argparse.BooleanOptionalAction, default=None,
                     help="labeled and unlabeled crops go through the network in separate passes, so that batch "
                          "norm normalises each group by its own statistics (default off: one batch, as officially)")
    cfg.add_argument("--levelset-target", choices=["patch", "volume"],
                     help="level-set target computed on the cropped patch (official) or the whole labeled volume")
    cfg.add_argument("--levelset-boundary", choices=["official", "half-voxel"],
                     help="the level-set target's zero level: on the mask's inner boundary voxels (official), or "
                          "half a voxel outward, so that the target is negative on exactly the mask's voxels")
    cfg.add_argument("--sync-batchnorm", action="store_true", default=None, help="SyncBatchNorm under torchrun")


def _config(args):
    import warnings

    from ..checkpoint import CHECKPOINT_NAME, load_checkpoint
    from ..config import TrainConfig
    from ..distributed import env_rank

    given = {k: v for k, v in vars(args).items() if v is not None and k in TrainConfig.__dataclass_fields__}
    if not args.resume:
        if args.init_model is not None:
            from ..finetune import init_settings

            given = init_settings(args.init_model, given)
        return TrainConfig(**{**RECIPES[args.recipe], **given})
    saved = TrainConfig.from_dict(load_checkpoint(args.output / CHECKPOINT_NAME)["config"])
    started_from = saved.init["path"] if saved.init else None
    if args.init_model is not None and str(args.init_model.resolve()) != started_from and env_rank() == 0:
        warnings.warn(f"--init {args.init_model} is ignored: a resumed run continues from its checkpoint (it "
                      f"started from {started_from or 'a new network'})")
    for key in RESUME_OVERRIDES:
        if key in given:
            setattr(saved, key, given[key])
    return saved


def _input_files(args) -> list[Path]:
    """The files the run reads, which none of its outputs may replace: the model a fine-tuning starts from,
    the datalist and the volumes it lists, or the LA layout's case list and cases."""
    from ..data import read_datalist
    from ..la import case_path, layout_root, read_case_list

    init = [args.init_model] if args.init_model is not None and not args.resume else []
    if args.datalist is not None:
        entries = read_datalist(args.datalist)
        return [*init, args.datalist,
                *(Path(entry[k]) for group in entries.values() for entry in group for k in entry)]
    if args.la_root is not None:
        return [*init, layout_root(args.la_root) / "train.list",
                *(case_path(args.la_root, case_id) for case_id in read_case_list(args.la_root))]
    return init


def _la_selection(args) -> tuple[int, int | None, int]:
    """--labeled, --unlabeled and --holdout as given; on --resume what is not given is the run's own (from
    its checkpoint), so that a resume continues on the cases it started on, not on the defaults'."""
    saved = {}
    if args.resume:
        from ..checkpoint import CHECKPOINT_NAME, load_checkpoint

        saved = load_checkpoint(args.output / CHECKPOINT_NAME).get("data", {}).get("selection") or {}
    chosen = lambda name, default: getattr(args, name) if getattr(args, name) is not None else saved.get(name, default)
    return chosen("labeled", 16), chosen("unlabeled", None), chosen("holdout", 0)


def _load_data(args, cfg):
    from ..data import load_files, load_la, read_datalist, split_validation
    from ..errors import InputError

    if (args.datalist is None) == (args.la_root is None):
        raise InputError("give exactly one of --datalist FILE or --la-root DIR")
    if args.la_root is not None:
        data = load_la(args.la_root, *_la_selection(args), cfg.spacing, zscore_crop=cfg.la_zscore == "crop")
    else:
        data = load_files(read_datalist(args.datalist), cfg.spacing, args.foreground_value, str(args.datalist))
    if not data.labeled:
        raise InputError(f"{args.datalist or args.la_root}: no labeled case; DTC needs at least one")
    return split_validation(data, args.val_fraction)


def _check_batch_norm_has_values(cfg, data) -> None:
    """Batch norm in training needs two values per channel; at the network's deepest level (the patch / 16)
    a 16x16x16 patch has one voxel, so one item per batch there fails at the first step."""
    from ..errors import InputError

    items = cfg.labeled_batch + (cfg.unlabeled_batch if data.unlabeled else 0)  # per process
    if items * math.prod(s // 16 for s in cfg.patch_size) < 2:
        patch = " ".join(map(str, cfg.patch_size))
        raise InputError(f"--patch {patch} with {items} item per batch ({cfg.labeled_batch} labeled, "
                         f"{cfg.unlabeled_batch if data.unlabeled else 'no'} unlabeled): batch norm at the "
                         "network's deepest level would see one value per channel; use a larger patch or batch")


def run(args) -> int:
    import contextlib
    import warnings

    from ..devices import resolve_device
    from ..distributed import env_rank
    from ..errors import InputError
    from ..files import check_outputs, check_writable_dir
    from ..checkpoint import CHECKPOINT_NAME
    from ..runlock import hold_run_lock
    from ..trainer import CONFIG_NAME, MODEL_NAME, PROGRESS_NAME, train

    cfg = _config(args)
    problems = []
    for check in (cfg.check, lambda: resolve_device(cfg.device)):
        try:
            check()
        except InputError as e:
            problems += e.problems
    if args.resume and args.overwrite:
        problems.append("--resume continues the run in --output, --overwrite replaces it: give one of them")
    if (args.holdout or 0) < 0 or not 0 <= args.val_fraction < 1:
        problems.append("--holdout must be >= 0 and --val-fraction in [0, 1)")
    if problems:
        raise InputError(problems)  # all at once, before any data is read
    out = check_writable_dir(args.output)
    check_outputs([out / name for name in (CHECKPOINT_NAME, MODEL_NAME, PROGRESS_NAME, CONFIG_NAME)],
                  _input_files(args))
    # rank 0 holds the folder for all ranks of a torchrun job (they all write through it)
    with hold_run_lock(out) if env_rank() == 0 else contextlib.nullcontext():
        earlier = [name for name in (CHECKPOINT_NAME, MODEL_NAME) if (out / name).is_file()]
        if earlier and not (args.resume or args.overwrite):  # a forgotten --resume would overwrite it
            raise InputError(f"{out}: holds a training run already ({', '.join(earlier)}); add --resume to "
                             "continue it, --overwrite to start again in its place, or choose another folder")
        data = _load_data(args, cfg)
        _check_batch_norm_has_values(cfg, data)
        if cfg.init is not None and not args.resume and env_rank() == 0:
            from ..finetune import data_grids, warn_of_other_grids

            warn_of_other_grids(data_grids(args.datalist, data), cfg.spacing, cfg.init["path"])
        small = [c["name"] for c in data.labeled + data.unlabeled
                 if any(s < p for s, p in zip(c["image"].shape, cfg.patch_size))]
        if small:
            warnings.warn(f"{len(small)} volumes are smaller than the patch {cfg.patch_size} and are zero-padded "
                          f"(e.g. {small[0]})")
        return train(cfg, data, out, resume=args.resume, progress_mode=args.progress)
