"""Training configuration. The defaults are the official DTC LA configuration (reference section 5), plus
intensity, spatial and low-contrast augmentation and a polynomial learning-rate decay, which the
development split showed better at equal training time (docs/benchmarks.md); `--recipe paper` restores the
official recipe exactly."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from .errors import InputError
from .model_metadata import MAX_N_FILTERS, MAX_PATCH_SIDE  # what a model file may declare


LR_SCHEDULES = ("step", "poly")
# How the LA h5 images are normalised: "stored", as the official data holds them (z-scored over the whole scan,
# then cropped around the atrium); "crop", z-scored again over the crop, as dtc infer and the panel z-score a
# user's scan or ROI over what it holds (docs/benchmarks.md, "The user's path").
LA_ZSCORES = ("stored", "crop")
# The switches that make the default recipe differ from the official one, as the official code sets them:
# `dtc train --recipe paper` trains with these, and a run saved before a switch existed trained so.
OFFICIAL_RECIPE = {"intensity_augmentation": False, "spatial_augmentation": False,
                   "low_contrast_augmentation": False, "lr_schedule": "step"}
RECIPES = {"default": {}, "paper": OFFICIAL_RECIPE}

# Defaults of a fine-tuning (`dtc train --init MODEL`), where the command line does not set them, measured on
# MSD-Heart (docs/benchmarks.md, "Adapting to a second site"): a model that segments already needs far fewer
# steps than a new network (every arm's validation Dice stopped rising by iteration 100-150 of 200), and the
# scratch learning rate beat gentler ones at that length (DTC, 4 labeled: 84.5% Dice at lr 0.01, 83.2 at
# 0.003, 79.9 at 0.001).
FINE_TUNING = {"iterations": 200, "lr": 0.01}


@dataclass
class TrainConfig:
    iterations: int = 6000
    labeled_batch: int = 2
    unlabeled_batch: int = 2
    patch_size: list[int] = field(default_factory=lambda: [112, 112, 80])
    n_filters: int = 16
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_schedule: str = "poly"  # "poly": lr x (1 - t/T)^0.9; "step" (official): lr x lr_gamma every lr_step iterations
    lr_step: int = 2500
    lr_gamma: float = 0.1
    k: float = 1500.0
    levelset_weight: float = 0.3
    consistency: float = 1.0
    consistency_rampup: float = 40.0
    rampup_step: int = 150
    seed: int = 1337
    device: str = "auto"
    amp: str = "auto"  # auto: bf16 autocast on CUDA GPUs with native bf16, off on the CPU (devices.autocast_bf16)
    workers: int = -1  # -1: min(4, cores - 1)
    val_every: int = 0  # 0: validate only at the end, when there are validation cases
    checkpoint_every: int = 500
    checkpoint_minutes: float = 10.0  # also checkpoint when this long has passed since the last one (0: off)
    spacing: list[float] | None = None  # resample to this spacing (mm); None keeps each volume's grid
    label_name: str = "Left atrium"
    sync_batchnorm: bool = False
    precise_bn: int = 0  # batches for recomputing batch-norm statistics without dropout at the end (0: off)
    # Recipe switches beyond the official method, weighed by benchmarks/la_accuracy.py:
    ema: float = 0.0  # decay of an exponential moving average of the weights, which becomes the model (0: off)
    intensity_augmentation: bool = True  # random brightness, contrast, gamma and noise on every image
    levelset_target: str = "patch"  # "volume": computed on the whole labeled volume, then cropped
    levelset_boundary: str = "official"  # "half-voxel": the target's zero level half a voxel out, {z < 0} = label
    spatial_augmentation: bool = True  # random rotations and scaling of 30% of the crops
    low_contrast_augmentation: bool = True  # intensities of 20% of the crops scaled by 0.2-1.0
    ce_weight: float = 0.0  # cross-entropy on the labeled items added to the supervised loss (0: off, official)
    cross_view: float = 0.0  # W: the heads' agreement as the pseudo-label of a strong view (0: off; `losses`)
    split_batchnorm: bool = False  # labeled and unlabeled crops normalised apart (`batchnorm.GroupedForward`)
    la_zscore: str = "stored"  # LA h5 images as stored, or z-scored again over their crop (LA_ZSCORES)
    init: dict | None = None  # a fine-tuning's starting model: {"path", "sha256"} (`finetune.init_settings`)

    def check(self) -> None:
        """Refuse out-of-range settings, named as on the command line, before any data is read."""
        rules = [
            (self.iterations >= 1, "--iterations must be >= 1"),
            (self.labeled_batch >= 1, "--labeled-batch must be >= 1"),
            (self.unlabeled_batch >= 0, "--unlabeled-batch must be >= 0"),
            (all(16 <= s <= MAX_PATCH_SIDE and s % 16 == 0 for s in self.patch_size),
             f"--patch {self.patch_size}: each size must be a multiple of 16 (the VNet halves it 4 times) "
             f"from 16 to {MAX_PATCH_SIDE}"),
            (1 <= self.n_filters <= MAX_N_FILTERS, f"--n-filters must be from 1 to {MAX_N_FILTERS}"),
            (0 <= self.seed < 2**32, "--seed must be in [0, 2^32)"),
            (self.lr > 0, "--lr must be positive"),
            (self.lr_step >= 1, "--lr-step must be >= 1 iteration"),
            (self.la_zscore in LA_ZSCORES, f"--la-zscore must be one of {', '.join(LA_ZSCORES)}"),
            (self.lr_schedule in LR_SCHEDULES, f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}"),
            (self.k > 0, "--k must be positive"),
            (self.levelset_boundary in ("official", "half-voxel"),
             "--levelset-boundary must be official or half-voxel"),
            (self.levelset_weight >= 0, "--levelset-weight must be >= 0"),
            (self.consistency >= 0, "--consistency must be >= 0"),
            (self.consistency_rampup >= 0, "--consistency-rampup must be >= 0"),
            (self.rampup_step >= 1, "--rampup-step must be >= 1 iteration"),
            (self.workers >= -1, "--workers must be >= 0 (or -1: automatic)"),
            (self.val_every >= 0, "--val-every must be >= 0 (0: at the end only)"),
            (self.checkpoint_every >= 1, "--checkpoint-every must be >= 1 iteration"),
            (self.checkpoint_minutes >= 0, "--checkpoint-minutes must be >= 0 (0: by iterations only)"),
            (self.precise_bn >= 0, "--precise-bn must be >= 0 batches (0: off)"),
            (0 <= self.ema < 1, "--ema must be in [0, 1) (0: off; e.g. 0.99)"),
            (self.ce_weight >= 0, "--ce-weight must be >= 0 (0: off)"),
            (self.cross_view >= 0, "--cross-view must be >= 0 (0: off; e.g. 1)"),
            (self.spacing is None or all(s > 0 for s in self.spacing), "--spacing must be positive"),
        ]
        problems = [message for ok, message in rules if not ok]
        # NaN fails every rule above, but an infinity passes a lower bound (a config from a checkpoint or the API)
        problems += [f"--{f.name.replace('_', '-')} must be a finite number" for f in fields(self)
                     if any(isinstance(v, float) and not math.isfinite(v) for v in _values(getattr(self, f.name)))]
        if problems:
            raise InputError(problems)

    def lr_at(self, iteration: int) -> float:
        """Learning rate of the 0-based `iteration` (poly: nnU-Net's decay to 0 at the last iteration;
        official steps: 0.01 for steps 1-2500, 1e-3 for 2501-5000...)."""
        if self.lr_schedule == "poly":
            return self.lr * (1 - iteration / self.iterations) ** 0.9
        return self.lr * self.lr_gamma ** (iteration // self.lr_step)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{**OFFICIAL_RECIPE, **{k: v for k, v in values.items() if k in known}})


def _values(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def fine_tuning_defaults(given: dict) -> dict:
    """FINE_TUNING, and a ramp-step length that spreads the consistency ramp over the run's iterations as the
    official ramp spans its 6000 (40 steps of 150), unless the command line sets the ramp."""
    defaults = {**FINE_TUNING}
    if "rampup_step" not in given:
        steps = given.get("consistency_rampup", TrainConfig.consistency_rampup) or 1
        defaults["rampup_step"] = max(1, int(given.get("iterations", FINE_TUNING["iterations"]) // steps))
    return defaults
