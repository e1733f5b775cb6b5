"""Pixel metrics, streamed: per-image histograms of 8-bit probabilities, split by truth, inside the FOV."""
from __future__ import annotations

import numpy as np

LEVELS = 256  # probability maps are stored as uint8: p = value / 255
AUPR_THRESHOLDS = np.linspace(0.0, 1.0, 11)


def image_histograms(probability_u8: np.ndarray, truth: np.ndarray, fov: np.ndarray | None = None) -> np.ndarray:
    """int64 (2, 256): counts of each probability level among negative (row 0) and positive (row 1) pixels.

    Pixels outside the FOV never count as predictions: a lesion pixel there counts as positive at level 0.
    """
    if probability_u8.dtype != np.uint8 or probability_u8.shape != truth.shape:
        raise ValueError(f"need uint8 probability and truth of one shape, got {probability_u8.dtype} "
                         f"{probability_u8.shape} vs {truth.shape}")
    probability_u8 = probability_u8 if fov is None else np.where(fov, probability_u8, 0).astype(np.uint8)
    positive = np.bincount(probability_u8[truth], minlength=LEVELS)
    everything = np.bincount(probability_u8.ravel(), minlength=LEVELS)
    if fov is not None:
        everything[0] -= int((~fov & ~truth).sum())  # negatives outside the FOV are not predictions at all
    return np.stack([everything - positive, positive]).astype(np.int64)


def counts_at(hist: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """(TP, FP, FN) of a (2, 256) histogram when p = level / 255 >= threshold is predicted positive."""
    predicted = np.arange(LEVELS) / 255.0 >= threshold
    tp = int(hist[1, predicted].sum())
    fp = int(hist[0, predicted].sum())
    fn = int(hist[1, ~predicted].sum())
    return tp, fp, fn


def scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall, Dice, IoU from counts; an empty prediction of an empty truth scores 1, never NaN."""
    precision = tp / (tp + fp) if tp + fp else 1.0 if fn == 0 else 0.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    dice = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 1.0
    iou = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    return {"precision": precision, "recall": recall, "dice": dice, "iou": iou}


def aupr_11(hist: np.ndarray) -> float:
    """IDRiD-challenge AUPR: P/R at thresholds linspace(0,1,11), P=1 with no predictions, trapezoid over R."""
    points = []
    for t in AUPR_THRESHOLDS:
        tp, fp, fn = counts_at(hist, t)
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        points.append((recall, precision))
    points.sort()
    recall, precision = np.array(points).T
    return float(np.trapezoid(precision, recall))


def average_precision(hist: np.ndarray) -> float:
    """Exact average precision over all pixels: sum over distinct levels of (R_n - R_n-1) * P_n."""
    positives = hist[1].sum()
    if positives == 0:
        return float("nan")
    tp = np.cumsum(hist[1][::-1])  # predicted positive at level >= v, v descending
    fp = np.cumsum(hist[0][::-1])
    present = (hist[0][::-1] + hist[1][::-1]) > 0
    tp, fp = tp[present], fp[present]
    recall = tp / positives
    precision = tp / (tp + fp)
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def bootstrap_mean_ci(values: np.ndarray, draws: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5 %, 97.5 %) of per-image values, images resampled with replacement."""
    values = np.asarray(values, float)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (draws, values.size))].mean(axis=1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise(hists: list[np.ndarray], threshold: float, bootstrap_draws: int = 1000, seed: int = 0) -> dict:
    """Pooled and per-image-mean scores of one lesion class from its per-image (2, 256) histograms."""
    pooled = np.sum(hists, axis=0) if hists else np.zeros((2, LEVELS), np.int64)
    out = scores(*counts_at(pooled, threshold))
    out.update(aupr_11=aupr_11(pooled), ap=average_precision(pooled), threshold=threshold, n_images=len(hists))
    per_image = [scores(*counts_at(h, threshold))["dice"] for h in hists]
    mean, low, high = bootstrap_mean_ci(np.array(per_image), bootstrap_draws, seed)
    out.update(dice_per_image_mean=mean, dice_per_image_ci95=[low, high])
    return out
