"""The train section of params.yaml as a checked dataclass: the only place its values
are written down is params.yaml."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from micropatch.core.compute import PRECISIONS
from micropatch.core.fileio import load_params

LR_SCHEDULES = ("plateau", "cosine")


OPTIMIZERS = ("adamw", "sgd")


# patch_dice: pooled Dice at 0.5 over the selection patches, where about half the windows hold a lesion (the paper).
# dice, aupr_11, ap: full-image estimates: lesion-free windows weighted by 1 / background_keep, so the pooled counts
# stand for every window of the selection images, 99.9 % background as they are (weighted_histograms).
SELECTION_SCORES = ("patch_dice", "dice", "aupr_11", "ap")


@dataclass(frozen=True)
class TrainConfig:
    """The train section of params.yaml, which is the only place its values are written down."""

    encoder: str
    encoder_weights: str | None
    attention: str | None
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    dice_weight: float
    focal_alpha: float
    focal_gamma: float
    lr_patience: int
    lr_factor: float
    early_stopping_patience: int
    workers: int
    seed: int
    max_steps_per_epoch: int | None
    lr_schedule: str             # plateau (ReduceLROnPlateau on the selection score, the paper) or cosine (per step)
    select_on: str               # the epoch's score on the selection split: one of SELECTION_SCORES
    optimizer: str               # adamw (the paper) or sgd (with momentum, Nesterov)
    momentum: float              # sgd only
    bce_weight: float            # loss = dice_weight * Dice + bce_weight * BCE + the rest * Focal
    processes: int               # > 1: the train stage runs itself under torchrun with this many processes
    sync_batchnorm: bool         # with processes > 1: BatchNorm statistics over the global batch
    monitor_val: bool            # with a tune split: also score val after every epoch, for the history only
    init_seed: int | None        # the initial weights' seed (null: seed); runs sharing it can be souped
    swa_epochs: int              # > 0: the weights of the last this many epochs are kept too (SWA, averaging.py)
    precision: str               # fp32, or bf16: autocast on CPUs with AVX512-BF16 or AMX (about 1.9x here)
    ohem_ratio: float            # > 0: the BCE term over the lesion pixels and only the hardest negatives, this many
                                 #   per lesion pixel of the batch (online hard-example mining)
    synthetic_ma: float          # > 0: this share of lesion-free training patches gets 1-3 real MA crops of the
                                 #   train split, Poisson-blended at random places (paste_lesions)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train.optimizer {self.optimizer!r}: choose one of {OPTIMIZERS}")
        if not (0 <= self.dice_weight and 0 <= self.bce_weight and self.dice_weight + self.bce_weight <= 1):
            raise ValueError(f"train.dice_weight {self.dice_weight} and train.bce_weight {self.bce_weight} must be "
                             "non-negative and sum to at most 1 (Focal takes the rest)")
        if not (isinstance(self.processes, int) and self.processes >= 1):
            raise ValueError(f"train.processes must be a positive integer, got {self.processes!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"train.lr_schedule {self.lr_schedule!r}: choose one of {LR_SCHEDULES}")
        if self.ohem_ratio < 0 or (self.ohem_ratio > 0 and self.bce_weight == 0):
            raise ValueError(f"train.ohem_ratio {self.ohem_ratio} needs train.bce_weight > 0: it mines the BCE term")
        if not 0 <= self.synthetic_ma <= 1:
            raise ValueError(f"train.synthetic_ma {self.synthetic_ma} must be a share in [0, 1]")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision {self.precision!r}: choose one of {PRECISIONS}")
        if self.select_on not in SELECTION_SCORES:
            raise ValueError(f"train.select_on {self.select_on!r}: choose one of {SELECTION_SCORES}")

    @classmethod
    def from_params(cls, path: str | Path = "params.yaml", **overrides) -> "TrainConfig":
        """params.yaml's `train` section, with overrides (tests and benchmarks shorten a run this way)."""
        return cls(**(load_params("train", path) | overrides))
