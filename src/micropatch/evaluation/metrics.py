"""Pixel metrics, streamed: per-image histograms of 8-bit probabilities, split by truth, inside the FOV."""
from __future__ import annotations

import cv2
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


def threshold_level(threshold: float) -> int:
    """The lowest 8-bit level predicted positive at a threshold: the first v with v / 255 >= threshold."""
    return int(np.searchsorted(np.arange(LEVELS) / 255.0, threshold, side="left"))


def counts_at(hist: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """(TP, FP, FN) of a (2, 256) histogram when p = level / 255 >= threshold is predicted positive."""
    predicted = np.arange(LEVELS) >= threshold_level(threshold)
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


def pr_points_11(hist: np.ndarray) -> dict[str, list[float]]:
    """Pooled precision and recall at the 11 IDRiD-challenge thresholds (precision 1 where nothing is predicted)."""
    counts = [counts_at(hist, t) for t in AUPR_THRESHOLDS]
    return {"threshold": AUPR_THRESHOLDS.round(2).tolist(),
            "precision": [tp / (tp + fp) if tp + fp else 1.0 for tp, fp, _ in counts],
            "recall": [tp / (tp + fn) if tp + fn else 0.0 for tp, _, fn in counts]}


def aupr_11(hist: np.ndarray) -> float:
    """IDRiD-challenge AUPR: the 11 P/R points traced from the highest threshold down, starting at recall 0 and
    precision 1 (above the last threshold nothing is predicted: the challenge's precision 1), area by the
    trapezoidal rule. A perfect map scores 1 and an empty one about 0.5. (Sorting the points by recall without
    that start, as before, gave a perfect map 0: all its points share recall 1.)"""
    points = pr_points_11(hist)
    recall = np.r_[0.0, points["recall"][::-1]]  # non-decreasing as the threshold falls
    precision = np.r_[1.0, points["precision"][::-1]]
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


def curves(pooled: np.ndarray) -> dict:
    """PR curve over all 256 levels, the 11 aupr_11 points, and the Dice-maximising threshold (an oracle figure)."""
    tp = np.cumsum(pooled[1][::-1])[::-1]  # predicted positive at level >= v
    fp = np.cumsum(pooled[0][::-1])[::-1]
    fn = pooled[1].sum() - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
        recall = tp / max(int(pooled[1].sum()), 1)
        dice = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 1.0)
    best = int(np.argmax(dice[1:])) + 1  # level 0 predicts the whole frame
    return {
        "pr_curve": {"threshold": (np.arange(LEVELS) / 255).round(4).tolist(), "precision": precision.tolist(),
                     "recall": recall.tolist()},
        "pr_11": pr_points_11(pooled),
        "oracle_threshold_max_dice": round(best / 255, 4), "oracle_dice": float(dice[best]),
    }


def bootstrap_mean_ci(values: np.ndarray, draws: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5 %, 97.5 %) of per-image values, images resampled with replacement."""
    values = np.asarray(values, float)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    if draws == 0:  # no interval asked for (proxy runs)
        return float(values.mean()), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (draws, values.size))].mean(axis=1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


# A map is degenerate when it marks fewer pixels at p >= 0.5 than a tenth of the true ones, or none: its aupr_11
# then reads mostly the challenge's convention (precision 1 where nothing is predicted: an empty map scores about
# 0.5), not a ranking. Tables mark such rows; AP is the ranking score to read.
DEGENERATE_SHARE = 0.1


def is_degenerate(pooled: np.ndarray) -> bool:
    """Whether a pooled (2, 256) histogram's map is degenerate (DEGENERATE_SHARE)."""
    predicted = int(pooled[:, threshold_level(0.5):].sum())
    return predicted == 0 or predicted < DEGENERATE_SHARE * int(pooled[1].sum())


def summarise(hists: list[np.ndarray], threshold: float, bootstrap_draws: int = 1000, seed: int = 0,
              operating: list[tuple[int, int, int]] | None = None) -> dict:
    """Pooled and per-image-mean scores of one lesion class from its per-image (2, 256) histograms.

    operating: per-image pixel (TP, FP, FN) at the operating point (postprocess.operating_mask, which may remove
    small components); by default those of the threshold alone. P/R/Dice/IoU come from it; the ranking scores
    (aupr_11, AP, curves) always from the probabilities.
    """
    pooled = np.sum(hists, axis=0) if hists else np.zeros((2, LEVELS), np.int64)
    operating = [counts_at(h, threshold) for h in hists] if operating is None else operating
    out = scores(*(np.sum(operating, axis=0).tolist() if operating else (0, 0, 0)))
    out.update(aupr_11=aupr_11(pooled), ap=average_precision(pooled), degenerate=is_degenerate(pooled),
               threshold=threshold, n_images=len(hists))
    out.update(curves(pooled))
    per_image = [scores(*c)["dice"] for c in operating]
    mean, low, high = bootstrap_mean_ci(np.array(per_image), bootstrap_draws, seed)
    out.update(dice_per_image_mean=mean, dice_per_image_ci95=[low, high])
    return out


def mask_lesion_counts(mask: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(true lesions, found, false-positive components) of a bool prediction: a true 8-connected lesion is found
    when a predicted component touches it; a predicted component touching none is one false positive."""
    n_true, labels = cv2.connectedComponents(truth.astype(np.uint8), connectivity=8)
    found = np.unique(labels[mask & truth]).size
    n_pred, pred_labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    touching = np.unique(pred_labels[mask & truth]).size
    return n_true - 1, found, n_pred - 1 - touching


FROC_FPS_PER_IMAGE = (0.125, 0.25, 0.5, 1, 2, 4, 8)
FP_LEVELS = np.unique(np.r_[np.arange(0, 256, 8), 255, 128])  # thresholds (levels) where FPs are counted


def operating_index(threshold: float) -> int:
    """Index into FP_LEVELS of the level nearest the operating threshold (128 for 0.5)."""
    return int(np.argmin(np.abs(FP_LEVELS - threshold_level(threshold))))


def image_lesion_counts(probability_u8: np.ndarray, truth: np.ndarray, fov: np.ndarray | None = None) -> dict:
    """Lesion-level counts of one image: found lesions per level (exact) and false-positive components per FP level.

    A true lesion (8-connected component) is found at threshold t when a predicted component touches it, i.e.
    when its highest probability is >= t; a predicted component touching no true lesion is one false positive.
    """
    probability_u8 = probability_u8 if fov is None else np.where(fov, probability_u8, 0).astype(np.uint8)
    n_true, labels = cv2.connectedComponents(truth.astype(np.uint8), connectivity=8)
    lesion_peak = np.zeros(max(n_true - 1, 0), np.int64)
    if n_true > 1:
        np.maximum.at(lesion_peak, labels[truth] - 1, probability_u8[truth].astype(np.int64))
    false_positives = []
    for level in FP_LEVELS:
        predicted = (probability_u8 >= max(level, 1)).astype(np.uint8)  # level 0 would predict the whole frame
        n_pred, pred_labels = cv2.connectedComponents(predicted, connectivity=8)
        touching = np.unique(pred_labels[truth & (predicted > 0)])
        false_positives.append(n_pred - 1 - touching.size)
    return {"peak_hist": np.bincount(lesion_peak, minlength=LEVELS), "lesions": int(lesion_peak.size),
            "false_positives": np.array(false_positives, np.int64)}


def froc_sensitivities(fps_per_image: np.ndarray, sensitivity: np.ndarray,
                       targets: tuple = FROC_FPS_PER_IMAGE) -> np.ndarray:
    """Sensitivity at each target FP rate, interpolated linearly along the curve, exactly as MONAI's (and the
    CAMELYON16 challenge's) compute_froc_score does; the FROC score is their mean.

    fps_per_image and sensitivity run from the lowest threshold to the highest. Below the lowest FP rate the curve
    reaches, the sensitivity there holds: a saturated model, whose maps reach p = 1 on false positives, scores its
    lesion sensitivity at p = 1 at every target below that rate, not 0.
    """
    return np.interp(targets, fps_per_image[::-1], sensitivity[::-1])


def lesion_summary(counts: list[dict], threshold: float,
                   operating: list[tuple[int, int, int]] | None = None) -> dict:
    """Sensitivity and FPs/image at the threshold, the FROC curve and its score (mean sensitivity at 1/8..8 FPs,
    interpolated as MONAI does: froc_sensitivities). operating: per-image mask_lesion_counts at the operating point,
    which then give the sensitivity and FPs/image (exact, with any small components removed)."""
    n_images = len(counts)
    lesions = sum(c["lesions"] for c in counts)
    peak_hist = np.sum([c["peak_hist"] for c in counts], axis=0) if counts else np.zeros(LEVELS, np.int64)
    found_at_or_above = np.cumsum(peak_hist[::-1])[::-1]  # lesions whose peak level >= v
    false_positives = np.sum([c["false_positives"] for c in counts], axis=0) if counts else np.zeros(len(FP_LEVELS))
    sensitivity = found_at_or_above[np.maximum(FP_LEVELS, 1)] / lesions if lesions else np.full(len(FP_LEVELS), np.nan)
    fps_per_image = false_positives / max(n_images, 1)
    froc = froc_sensitivities(fps_per_image, sensitivity)
    if operating is None:
        at = operating_index(threshold)
        lesion_sensitivity, fps_at = float(sensitivity[at]), float(fps_per_image[at])
    else:
        _, found, fps = np.sum(operating, axis=0) if operating else (0, 0, 0)
        lesion_sensitivity = float(found / lesions) if lesions else float("nan")
        fps_at = float(fps / max(n_images, 1))
    return {"lesions": lesions, "lesion_sensitivity": lesion_sensitivity,
            "fps_per_image": fps_at, "froc": float(np.mean(froc)),
            "froc_sensitivities": dict(zip([str(f) for f in FROC_FPS_PER_IMAGE], froc.tolist())),
            "froc_curve": {"threshold": (FP_LEVELS / 255.0).round(4).tolist(),
                           "fps_per_image": fps_per_image.tolist(), "sensitivity": sensitivity.tolist()}}


def to_uint8(probability: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> uint8 0..255 (p = value / 255, rounded to nearest)."""
    return np.round(np.clip(probability, 0.0, 1.0) * 255).astype(np.uint8)
