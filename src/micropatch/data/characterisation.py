"""What each dataset is like before any model sees it (the second study's data section): its labelling style,
read from the joint distribution per image of lesion count and mean lesion area, and an image-quality grade per
photograph. Both are transparent rules whose thresholds were set on real IDRiD and on the generator's fine,
coarse and mixed sets (docs/explanation/characterisation.md); the study graded quality with MCF-Net, whose
weights cannot
be fetched here, so the grade below is not MCF-Net's."""
from __future__ import annotations

from collections import Counter

import cv2
import numpy as np

from micropatch.data.preprocessing import fov_diameter, fov_mask

# An image looks coarsely labelled when its mean lesion component area (all annotated lesion types together)
# exceeds this share of its FOV area (parts per million): about the geometric mean of real IDRiD's largest
# per-image mean (743 ppm; median 105) and the smallest of the generator's coarse labels at the default's size
# (1,972 ppm; its fine labels reach 438). docs/explanation/characterisation.md.
COARSE_IMAGE_PPM = 1200.0
# A dataset is fine when under this share of its images with lesions look coarse, coarse above the other, else mixed
FINE_BELOW, COARSE_ABOVE = 0.2, 0.8
GRADES = ("Good", "Usable", "Reject")
# Quality measures on the green channel resampled to a 512 px FOV diameter (so that every camera is read at one
# scale): focus, the Laplacian's standard deviation over the mean green inside the FOV; brightness, the mean green
# inside the FOV; evenness, 1 - the spread of the heavily blurred green over its mean. (reject below, good at):
# real IDRiD's lowest values (focus 0.121, brightness 40.0, evenness 0.522 over its 54 training images, all
# graded images of a challenge set) times 0.4 and 0.8 (docs/explanation/characterisation.md)
QUALITY_LIMITS = {"focus": (0.048, 0.097), "brightness": (16.0, 32.0), "evenness": (0.209, 0.418)}
QUALITY_DIAMETER = 512


def fov_area(fingerprint: dict) -> float:
    return fingerprint["fov_fraction"] * fingerprint["height"] * fingerprint["width"]


def lesion_statistics(fingerprint: dict) -> dict[str, dict]:
    """{lesion: {count, mean_area_ppm}} of one preprocessed image (its fingerprint) for each lesion it annotates
    and has, plus "all" for those lesions together; ppm: of the FOV area, so that datasets of different
    resolutions compare."""
    area = fov_area(fingerprint)
    groups = {lesion: areas for lesion, areas in fingerprint["component_areas"].items()
              if fingerprint["annotated"].get(lesion) and areas}
    groups["all"] = [a for areas in groups.values() for a in areas]
    return {lesion: {"count": len(areas), "mean_area_ppm": round(1e6 * sum(areas) / len(areas) / area, 2)}
            for lesion, areas in groups.items() if areas and area}


def labelling_style(fingerprints: list[dict], coarse_image_ppm: float = COARSE_IMAGE_PPM) -> dict:
    """A dataset's labelling style: fine, mixed or coarse by the share of its images with lesions whose mean
    lesion area is above coarse_image_ppm, with that share and the images counted."""
    means = [s["all"]["mean_area_ppm"] for fp in fingerprints if "all" in (s := lesion_statistics(fp))]
    share = sum(m > coarse_image_ppm for m in means) / len(means) if means else 0.0
    style = "fine" if share < FINE_BELOW else "coarse" if share > COARSE_ABOVE else "mixed"
    return {"style": style if means else "unlabelled", "coarse_share": round(share, 4), "images": len(means)}


def quality_measures(rgb: np.ndarray, fov_threshold: int) -> dict[str, float]:
    """focus, brightness and evenness of one uint8 RGB photograph (QUALITY_LIMITS says how they are read)."""
    fov = fov_mask(rgb, fov_threshold)
    diameter = fov_diameter(fov)
    if not diameter:
        return {"focus": 0.0, "brightness": 0.0, "evenness": 0.0}
    scale = QUALITY_DIAMETER / diameter
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    green = cv2.resize(np.ascontiguousarray(rgb[..., 1]), size, interpolation=cv2.INTER_AREA).astype(np.float64)
    inside = cv2.erode(cv2.resize(fov.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST),
                       np.ones((9, 9), np.uint8)) > 0  # the FOV's rim is an edge, not focus
    mean = green[inside].mean()
    if mean <= 0:
        return {"focus": 0.0, "brightness": 0.0, "evenness": 0.0}
    focus = cv2.Laplacian(green, cv2.CV_64F, ksize=3)[inside].std() / mean
    background = cv2.GaussianBlur(green, (0, 0), QUALITY_DIAMETER / 16)[inside]
    # 4 significant digits: the measures are read against limits, and their last bits depend on the CPU's SIMD
    return {"focus": float(f"{focus:.4g}"), "brightness": float(f"{mean:.4g}"),
            "evenness": float(f"{1 - background.std() / background.mean():.4g}")}


def quality_grade(measures: dict[str, float], limits: dict = QUALITY_LIMITS) -> str:
    """Reject when any measure is below its reject limit, Usable when any is below its good limit, else Good."""
    if any(measures[k] < reject for k, (reject, _) in limits.items()):
        return "Reject"
    if any(measures[k] < good for k, (_, good) in limits.items()):
        return "Usable"
    return "Good"


def grade_counts(grades: list[str]) -> dict[str, int]:
    counts = Counter(grades)
    return {grade: counts[grade] for grade in GRADES}
