"""Epoch selection: scores of a model on a selection patch set, the full-image
estimates weighting each lesion-free window by 1 / background_keep."""
from __future__ import annotations

import math

import numpy as np
import torch

from micropatch.evaluation.metrics import LEVELS, aupr_11, average_precision, counts_at, scores
from micropatch.training.network import autocast, normalise


def patch_weights(lesion_pixels: np.ndarray, background_keep: float) -> np.ndarray:
    """Per-patch weights that make a selection patch set stand for whole images: a lesion window was always kept
    (weight 1), a lesion-free one with probability background_keep (weight 1 / background_keep)."""
    if not 0 < background_keep <= 1:
        raise ValueError(f"background_keep {background_keep} must be in (0, 1]")
    return np.where(np.asarray(lesion_pixels) > 0, 1.0, 1.0 / background_keep)


def weighted_histograms(probability: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """float64 (L, 2, 256): metrics.image_histograms' counts, per lesion, with each patch counted `weights` times.

    probability: float (N, L, S, S) in [0, 1]; truth: bool (N, L, S, S); weights: (N,).
    """
    levels = np.round(np.clip(probability, 0, 1) * (LEVELS - 1)).astype(np.int64)  # as the maps are stored
    n, n_lesions = levels.shape[:2]
    pixel_weights = np.repeat(np.asarray(weights, np.float64), levels[0, 0].size)
    out = np.zeros((n_lesions, 2, LEVELS))
    for lesion in range(n_lesions):
        index = truth[:, lesion].reshape(n, -1).astype(np.int64) * LEVELS + levels[:, lesion].reshape(n, -1)
        out[lesion] = np.bincount(index.ravel(), pixel_weights, minlength=2 * LEVELS).reshape(2, LEVELS)
    return out


def evaluate_patches(model, loader, loss_fn, device, weights: np.ndarray | None = None,
                     precision: str = "fp32") -> dict[str, float]:
    """Selection scores over a patch loader (in order): loss, patch_dice (pooled at 0.5) and, with per-patch
    `weights` (patch_weights), the full-image estimates dice, aupr_11 and ap, means over the lesions."""
    model.eval()
    tp = fp = fn = 0
    losses, hist, seen = [], 0.0, 0
    with torch.inference_mode():
        for images, masks in loader:
            images = normalise(images.to(device)).contiguous(memory_format=torch.channels_last)
            masks = masks.to(device)
            with autocast(device, precision):
                logits = model(images)
            losses.append(loss_fn(logits.float(), masks).item())
            pred = logits > 0  # sigmoid(logit) > 0.5
            truth = masks > 0.5
            tp += int((pred & truth).sum())
            fp += int((pred & ~truth).sum())
            fn += int((~pred & truth).sum())
            if weights is not None:
                batch_weights = weights[seen:seen + len(images)]
                hist = hist + weighted_histograms(torch.sigmoid(logits.float()).cpu().numpy(),
                                                  truth.cpu().numpy(), batch_weights)
            seen += len(images)
    result = {"loss": mean(losses), "patch_dice": scores(tp, fp, fn)["dice"]}
    if weights is not None:
        result |= {"dice": mean([scores(*counts_at(h, 0.5))["dice"] for h in hist]),
                   "aupr_11": mean([aupr_11(h) for h in hist]), "ap": mean([average_precision(h) for h in hist])}
    return result


def mean(values: list[float]) -> float:
    """Correctly rounded mean (math.fsum), so it does not depend on a summation order; NaN when empty."""
    return math.fsum(values) / len(values) if values else math.nan
