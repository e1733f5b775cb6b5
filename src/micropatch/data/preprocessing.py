"""Preprocessing: green channel, CLAHE, field-of-view mask; native resolution throughout."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import cv2
import imagehash
import numpy as np
from PIL import Image

from micropatch.core.fileio import InputError, read_fundus, read_mask, sha256_file, write_png
from micropatch.data.datasets import Record

# The method's preprocessing, for checkpoints that carry no recipe; the pipeline's come from params.yaml.
DEFAULTS = {"clahe_clip_limit": 2.0, "clahe_grid": 8, "fov_threshold": 15}
PHASH_SIZE = 16  # 256 bits: with 64, distinct IDRiD eyes came as close as 6 while duplicates reached 8
log = logging.getLogger(__name__)


def green_clahe(rgb: np.ndarray, clip_limit: float = DEFAULTS["clahe_clip_limit"],
                grid: int = DEFAULTS["clahe_grid"]) -> np.ndarray:
    """CLAHE of the green channel: uint8 RGB (H, W, 3) -> uint8 (H, W), same size."""
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(grid, grid))
    return clahe.apply(np.ascontiguousarray(rgb[..., 1]))


def fov_mask(rgb: np.ndarray, threshold: int = DEFAULTS["fov_threshold"]) -> np.ndarray:
    """Field of view, bool (H, W): the largest bright region of the red channel, holes filled."""
    red = cv2.medianBlur(np.ascontiguousarray(rgb[..., 0]), 5)  # JPEG noise in the black border is not fundus
    bright = (red > threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    if count <= 1:
        return np.zeros(red.shape, bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == largest).astype(np.uint8)
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(region)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)  # dark lesions inside the disc stay FOV
    return filled.astype(bool)


def fov_diameter(fov: np.ndarray) -> int:
    """The field of view's diameter in px: its larger extent (cameras crop the disc top and bottom, rarely both
    ways), 0 for an empty mask."""
    rows, cols = np.flatnonzero(fov.any(axis=1)), np.flatnonzero(fov.any(axis=0))
    if rows.size == 0:
        return 0
    return int(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))


def checked_fov(rgb: np.ndarray, threshold: int, path) -> np.ndarray:
    """fov_mask, refusing a frame under 5 % of which is field of view: it is no fundus photograph."""
    fov = fov_mask(rgb, threshold)
    if fov.mean() < 0.05:
        raise InputError(f"{path}: under 5 % of the image is brighter than the field-of-view threshold ({threshold}); "
                         "this does not look like a fundus photograph (or the FOV threshold is wrong)")
    return fov


def fov_phash(enhanced: np.ndarray, fov: np.ndarray) -> str:
    """256-bit perceptual hash (hex) of the CLAHE green image (H, W) cropped to the FOV's bounding box.

    CLAHE brings out the vessel tree, which tells eyes apart; cropping to the FOV drops the camera's framing.
    """
    ys, xs = np.nonzero(fov)
    crop = enhanced if ys.size == 0 else enhanced[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    return str(imagehash.phash(Image.fromarray(np.ascontiguousarray(crop)), hash_size=PHASH_SIZE))


def preprocess_record(record: Record, out_dir: Path, lesions: list[str], clip_limit: float, grid: int,
                      fov_threshold: int) -> dict:
    """Write <id>.png (CLAHE green), <id>_fov.png and <id>_<lesion>.png under out_dir; return the fingerprint."""
    rgb = read_fundus(record.image_path)
    shape = rgb.shape[:2]
    fov = checked_fov(rgb, fov_threshold, record.image_path)
    lesion_pixels, component_areas, masks, notes = {}, {}, {}, []
    for lesion in lesions:
        path = record.masks.get(lesion)
        masks[lesion] = (read_mask(path, shape, notes, record.mask_level, record.antialiased) if path is not None
                         else np.zeros(shape, bool))
        lesion_pixels[lesion] = int(masks[lesion].sum())
        component_areas[lesion] = component_areas_px(masks[lesion])
    for note in notes:
        log.warning("%s", note)
    enhanced = green_clahe(rgb, clip_limit, grid)
    # write everything only after every input has validated, so a bad mask leaves no partial image set
    write_png(out_dir / f"{record.image_id}.png", enhanced)
    write_png(out_dir / f"{record.image_id}_fov.png", fov.astype(np.uint8) * 255)
    for lesion, mask in masks.items():
        write_png(out_dir / f"{record.image_id}_{lesion}.png", mask.astype(np.uint8) * 255)
    return {
        "dataset": record.dataset,
        "image_id": record.image_id,
        "patient_key": record.patient_key,
        "official_split": record.official_split,
        "source": str(record.image_path),
        "sha256": sha256_file(record.image_path),
        "phash": fov_phash(enhanced, fov),
        "height": int(shape[0]),
        "width": int(shape[1]),
        "fov_fraction": round(float(fov.mean()), 4),
        "lesion_pixels": lesion_pixels,
        "component_areas": component_areas,
        "annotated": {lesion: lesion in record.masks for lesion in lesions},
    }


def component_areas_px(mask: np.ndarray) -> list[int]:
    """Areas in px of the 8-connected components of a bool (H, W) mask, sorted."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return sorted(int(a) for a in stats[1:n, cv2.CC_STAT_AREA])


def dataset_summary(fingerprints: list[dict]) -> dict:
    """Images, patients, median resolution (WxH), resolution counts and per-lesion component-area percentiles (px)."""
    sizes = Counter(f"{fp['width']}x{fp['height']}" for fp in fingerprints)
    summary = {
        "images": len(fingerprints),
        "patients": len({fp["patient_key"] for fp in fingerprints}),
        "median_resolution": f"{int(np.median([fp['width'] for fp in fingerprints]))}x"
                             f"{int(np.median([fp['height'] for fp in fingerprints]))}",
        "median_megapixels": round(float(np.median([fp["width"] * fp["height"] / 1e6 for fp in fingerprints])), 2),
        "resolutions": dict(sorted(sizes.items())),
        "lesions": {},
    }
    for lesion in fingerprints[0]["component_areas"]:
        annotated = [fp for fp in fingerprints if fp["annotated"][lesion]]
        areas = np.array([a for fp in annotated for a in fp["component_areas"][lesion]], float)
        per_image = [len(fp["component_areas"][lesion]) for fp in annotated]
        p10, p50, p90 = np.percentile(areas, [10, 50, 90]) if len(areas) else (0.0, 0.0, 0.0)
        summary["lesions"][lesion] = {
            "annotated_images": len(annotated),
            "images_with_lesion": sum(n > 0 for n in per_image),
            "components": int(len(areas)),
            "components_per_image_median": float(np.median(per_image)) if per_image else 0.0,
            "area_px_p10": round(float(p10), 1), "area_px_median": round(float(p50), 1),
            "area_px_p90": round(float(p90), 1),
        }
    return summary
