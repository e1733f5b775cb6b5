"""`micropatch predict`: native-resolution lesion maps, masks, overlays and lesion lists for any fundus photograph."""
from __future__ import annotations

import csv
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from .inference import predict_probability, square_probability, to_uint8
from .postprocess import OPERATING_DEFAULTS, lesion_point, operating_mask
from .fileio import read_fundus, write_json, write_png, write_text
from .preprocessing import checked_fov, green_clahe
from .recipe import model_recipe

LESION_COLOURS = {"MA": (255, 255, 0), "HE": (255, 64, 64), "EX": (64, 255, 255), "SE": (255, 128, 255)}
LESION_COLUMNS = ("lesion", "centroid_x", "centroid_y", "area_px", "peak_probability")
PNG_WRITERS = min(4, os.cpu_count() or 1)


def lesion_list(probability: np.ndarray, mask: np.ndarray, lesion: str) -> list[dict]:
    """One row per 8-connected component of a bool (H, W) mask: centroid (px), area (px), peak probability."""
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    peaks = np.zeros(count, np.float32)
    np.maximum.at(peaks, labels[mask], probability[mask])
    return [{"lesion": lesion, "centroid_x": round(float(centroids[i][0]), 1),
             "centroid_y": round(float(centroids[i][1]), 1), "area_px": int(stats[i, cv2.CC_STAT_AREA]),
             "peak_probability": round(float(peaks[i]), 4)} for i in range(1, count)]


def overlay_outlines(rgb: np.ndarray, masks: dict[str, np.ndarray], thickness: int = 2) -> np.ndarray:
    """uint8 RGB with each lesion class's predicted components outlined in its colour (visible at any zoom)."""
    out = np.ascontiguousarray(rgb.copy())
    for lesion, mask in masks.items():
        contours, _ = cv2.findContours(cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)),
                                       cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, LESION_COLOURS.get(lesion, (255, 255, 255)), thickness)
    return out


def predict_image(model: torch.nn.Module, config: dict, image_path: Path, out_dir: Path, infer_params: dict,
                  preprocess: dict, point: dict = OPERATING_DEFAULTS, device: str = "cpu") -> dict:
    """Write <stem>_<lesion>_probability.png (p = v/255), _mask.png, <stem>_overlay.png and <stem>_lesions.{json,csv}.

    preprocess: {clahe_clip_limit, clahe_grid, fov_threshold}, the model's recipe unless the user overrode it;
    point: the operating point {threshold, min_area} that makes the masks (the model's unless overridden).
    """
    rgb = read_fundus(image_path)  # InputError for unreadable, truncated, grayscale, 16-bit, rotated input
    fov = checked_fov(rgb, preprocess["fov_threshold"], image_path)
    if model_recipe(config) == "study_baseline":  # the RGB photograph in the model's square frame
        probability = square_probability(model, rgb, fov, config, infer_params, device)
    else:
        enhanced = green_clahe(rgb, preprocess["clahe_clip_limit"], preprocess["clahe_grid"])
        probability = predict_probability(model, enhanced, fov, infer_params, device)
    stem, masks, lesions, pngs = Path(image_path).stem, {}, [], {}
    for lesion, channel in zip(config["lesions"], probability):
        quantised = to_uint8(channel)
        # the map as written decides, so files and lists agree
        own = lesion_point(point, lesion)
        masks[lesion] = operating_mask(quantised, own["threshold"], own["min_area"])
        pngs[out_dir / f"{stem}_{lesion}_probability.png"] = quantised
        pngs[out_dir / f"{stem}_{lesion}_mask.png"] = masks[lesion].astype(np.uint8) * 255
        lesions += lesion_list(quantised / 255.0, masks[lesion], lesion)
    pngs[out_dir / f"{stem}_overlay.png"] = overlay_outlines(rgb, masks)
    # PNG encoding releases the GIL: the files are written side by side (a 4288x2848 overlay alone takes 0.7 s)
    with ThreadPoolExecutor(PNG_WRITERS) as pool:
        list(pool.map(write_png, pngs, pngs.values()))
    write_json(out_dir / f"{stem}_lesions.json", {"image": str(image_path), "height": rgb.shape[0],
                                                  "width": rgb.shape[1], "operating_point": point, "lesions": lesions})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LESION_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(lesions)
    write_text(out_dir / f"{stem}_lesions.csv", buf.getvalue())
    return {"image": str(image_path), "lesions": len(lesions)}
