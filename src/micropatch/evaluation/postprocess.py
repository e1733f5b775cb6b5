"""The operating point: a probability threshold and a minimum component area, the mask they make, and how a
model's operating point is chosen on the tune split (never on val or a test domain)."""
from __future__ import annotations

import cv2
import numpy as np

from micropatch.evaluation.metrics import scores, threshold_level

# The paper's: threshold 0.5, no component removed. A model trained without a tune split carries these.
OPERATING_DEFAULTS = {"threshold": 0.5, "min_area": 0}
# Searched on the tune split: thresholds 0.05..0.95; minimum areas up to about half of IDRiD's p10 MA area (100 px).
THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))
MIN_AREA_GRID = (0, 10, 20, 30, 50)


def lesion_point(point: dict, lesion: str) -> dict:
    """{threshold, min_area} of one lesion: the point's own for that lesion where a multi-lesion model carries one
    per lesion (`per_lesion`), else the point's."""
    return ({k: point.get(k, OPERATING_DEFAULTS[k]) for k in OPERATING_DEFAULTS}
            | point.get("per_lesion", {}).get(lesion, {}))


def operating_mask(probability_u8: np.ndarray, threshold: float, min_area: int) -> np.ndarray:
    """bool (H, W): p = v / 255 >= threshold, without the 8-connected components smaller than min_area pixels."""
    mask = probability_u8 >= threshold_level(threshold)
    if min_area <= 0 or not mask.any():
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    return keep[labels]


def operating_counts(probability_u8: np.ndarray, truth: np.ndarray, fov: np.ndarray | None,
                     thresholds=THRESHOLD_GRID, min_areas=MIN_AREA_GRID) -> np.ndarray:
    """int64 (T, A, 3): pixel (TP, FP, FN) of one image for every (threshold, min_area); outside the FOV is 0."""
    probability_u8 = probability_u8 if fov is None else np.where(fov, probability_u8, 0).astype(np.uint8)
    out = np.zeros((len(thresholds), len(min_areas), 3), np.int64)
    for i, threshold in enumerate(thresholds):
        mask = probability_u8 >= threshold_level(threshold)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        areas = stats[:, cv2.CC_STAT_AREA]
        # per component: its true-positive pixels; a component is kept or removed whole
        hits = np.bincount(labels[truth], minlength=count)
        for j, min_area in enumerate(min_areas):
            kept = areas >= min_area
            kept[0] = False
            tp = int(hits[kept].sum())
            out[i, j] = tp, int(areas[kept].sum()) - tp, int(truth.sum()) - tp
    return out


def choose_operating_point(pooled: np.ndarray, thresholds=THRESHOLD_GRID, min_areas=MIN_AREA_GRID) -> dict:
    """The (threshold, min_area) of the largest pooled Dice in a (T, A, 3) sum of operating_counts; ties go to the
    smallest area, then the threshold nearest 0.5, so a flat optimum does not drift."""
    dice = np.array([[scores(*pooled[i, j])["dice"] for j in range(len(min_areas))] for i in range(len(thresholds))])
    order = sorted(((i, j) for i in range(len(thresholds)) for j in range(len(min_areas))),
                   key=lambda ij: (-dice[ij], min_areas[ij[1]], abs(thresholds[ij[0]] - 0.5)))
    i, j = order[0]
    at_paper = dice[int(np.argmin(np.abs(np.array(thresholds) - 0.5))), min_areas.index(0)] if 0 in min_areas else None
    return {"threshold": thresholds[i], "min_area": min_areas[j], "tune_dice": float(dice[i, j]),
            "tune_dice_at_paper_point": None if at_paper is None else float(at_paper),
            "dice_grid": {"thresholds": list(thresholds), "min_areas": list(min_areas),
                          "dice": dice.round(6).tolist()}}


def scaled_min_area(min_area: int, scale: float) -> int:
    """A minimum component area counted in the training images' frame, in the pixels of a photograph predicted
    after resampling by `scale` (inference.fov_scale): a component's area changes by scale ** 2."""
    return int(round(min_area / scale ** 2)) if min_area else 0
