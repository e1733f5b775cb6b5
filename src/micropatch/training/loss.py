"""The loss: Dice, BCE (optionally mined online: OHEM) and Focal in the shares the train
section gives."""
from __future__ import annotations

import torch

from micropatch.training.config import TrainConfig


def make_loss(n_classes: int, cfg: TrainConfig):
    """dice_weight Dice + bce_weight BCE + the rest Focal (alpha, gamma from cfg), on logits (the paper: 0.5 Dice +
    0.5 Focal). A term of weight 0 is not computed, so the paper's loss keeps the bits it had before BCE existed."""
    from segmentation_models_pytorch.losses import DiceLoss, FocalLoss

    mode = "binary" if n_classes == 1 else "multilabel"
    dice = DiceLoss(mode, from_logits=True)
    focal = FocalLoss(mode, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
    focal_weight = 1 - cfg.dice_weight - cfg.bce_weight
    if cfg.bce_weight == 0:
        return lambda logits, target: cfg.dice_weight * dice(logits, target) + focal_weight * focal(logits, target)
    bce = torch.nn.BCEWithLogitsLoss() if not cfg.ohem_ratio else lambda logits, t: ohem_bce(logits, t, cfg.ohem_ratio)
    return lambda logits, target: (cfg.dice_weight * dice(logits, target) + cfg.bce_weight * bce(logits, target)
                                   + focal_weight * focal(logits, target))


# With OHEM, a batch without lesion pixels still trains on this many of its hardest negative pixels.
OHEM_MIN_NEGATIVES = 1024


def ohem_bce(logits: torch.Tensor, target: torch.Tensor, ratio: float) -> torch.Tensor:
    """BCE over every lesion pixel and the `ratio` x as many negative pixels with the largest loss (at least
    OHEM_MIN_NEGATIVES): the easy background, most of every window, stops diluting the gradient."""
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    positive = target > 0.5
    negatives = loss[~positive]
    k = min(negatives.numel(), max(OHEM_MIN_NEGATIVES, int(ratio * int(positive.sum()))))
    hardest = torch.topk(negatives, k, sorted=False).values
    return (loss[positive].sum() + hardest.sum()) / (int(positive.sum()) + k)
