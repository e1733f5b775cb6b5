"""Recipe study_baseline's frame: the RGB photograph cropped to its FOV, resized and
zero-padded to a square of `side` px (and the maps back to the native frame); the square
sets patchify writes, and the colour augmentation its training crops use."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from micropatch.core.fileio import InputError, read_fundus, read_png

SQUARE_KIND = "squares"  # meta.json `kind` of a square set (patchify under recipe study_baseline)


@dataclass(frozen=True)
class SquareFrame:
    """Where an image's FOV box lands in its square: native box (top, left, height, width), its resized size and
    its offset inside the side x side square."""
    top: int
    left: int
    height: int
    width: int
    scaled_height: int
    scaled_width: int
    pad_top: int
    pad_left: int
    side: int


def square_frame(fov: np.ndarray, side: int) -> SquareFrame:
    """The frame of a bool (H, W) FOV mask: its bounding box, scaled so the longer side is `side`, centred."""
    ys, xs = np.nonzero(fov)
    if not len(ys):
        raise ValueError("square_frame: the FOV mask is empty")
    top, left = int(ys.min()), int(xs.min())
    height, width = int(ys.max()) + 1 - top, int(xs.max()) + 1 - left
    scale = side / max(height, width)
    scaled_height, scaled_width = max(1, round(height * scale)), max(1, round(width * scale))
    return SquareFrame(top, left, height, width, scaled_height, scaled_width, (side - scaled_height) // 2,
                       (side - scaled_width) // 2, side)


def to_square(array: np.ndarray, frame: SquareFrame) -> np.ndarray:
    """uint8 (H, W[, C]) -> (side, side[, C]): the FOV box resized (bit-exact bilinear) and zero-padded."""
    f = frame
    crop = np.ascontiguousarray(array[f.top:f.top + f.height, f.left:f.left + f.width])
    resized = cv2.resize(crop, (f.scaled_width, f.scaled_height), interpolation=cv2.INTER_LINEAR_EXACT)
    out = np.zeros((f.side, f.side) + array.shape[2:], array.dtype)
    out[f.pad_top:f.pad_top + f.scaled_height, f.pad_left:f.pad_left + f.scaled_width] = resized.reshape(
        (f.scaled_height, f.scaled_width) + array.shape[2:])
    return out


def mask_to_square(mask: np.ndarray, frame: SquareFrame) -> np.ndarray:
    """bool (H, W) -> uint8 {0, 1} (side, side): a square pixel is lesion where at least half of it was."""
    return (to_square(mask.astype(np.uint8) * 255, frame) >= 128).astype(np.uint8)


def to_native(probability: np.ndarray, frame: SquareFrame, shape: tuple[int, int]) -> np.ndarray:
    """float32 (L, side, side) maps -> (L, H, W) in the native frame (bilinear; 0 outside the FOV box)."""
    f = frame
    out = np.zeros((len(probability), *shape), np.float32)
    for k, channel in enumerate(probability):
        inner = np.ascontiguousarray(channel[f.pad_top:f.pad_top + f.scaled_height,
                                             f.pad_left:f.pad_left + f.scaled_width], dtype=np.float32)
        out[k, f.top:f.top + f.height, f.left:f.left + f.width] = cv2.resize(inner, (f.width, f.height),
                                                                           interpolation=cv2.INTER_LINEAR)
    return out


def read_rgb_and_fov(row: dict, preprocessed: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB photograph, bool FOV) of a manifest row: the raw file it names (`source`, relative to the project)
    and the preprocess stage's FOV mask, which must have its size."""
    rgb = read_fundus(row["source"])
    fov = read_png(Path(preprocessed) / row["dataset"] / f"{row['image_id']}_fov.png") > 0
    if rgb.shape[:2] != fov.shape:
        raise InputError(f"{row['source']}: {rgb.shape[1]}x{rgb.shape[0]}, but its preprocessed FOV is "
                         f"{fov.shape[1]}x{fov.shape[0]}: the raw data changed after preprocess; rerun `dvc repro`")
    return rgb, fov


def build_square_set(rows: list[dict], preprocessed: Path, lesions: list[str],
                     side: int) -> tuple[np.ndarray, np.ndarray, list[dict], dict]:
    """Square set of the manifest rows: images (N, side, side, 3) uint8, masks (N, L, side, side) uint8, index rows
    (patchify's columns: each square is one 'patch' at 0, 0, so the audit checks it as any patch) and frames."""
    images, masks, index, frames = [], [], [], {}
    for row in tqdm(rows, desc="square", unit="img"):
        folder = Path(preprocessed) / row["dataset"]
        rgb, fov = read_rgb_and_fov(row, preprocessed)
        frame = square_frame(fov, side)
        lesion = np.stack([mask_to_square(read_png(folder / f"{row['image_id']}_{name}.png") > 0, frame)
                           for name in lesions])
        images.append(to_square(rgb, frame))
        masks.append(lesion)
        index.append({"dataset": row["dataset"], "image_id": row["image_id"], "y": 0, "x": 0,
                      "lesion_pixels": int(lesion.any(axis=0).sum())})
        frames[f"{row['dataset']}/{row['image_id']}"] = asdict(frame)
    stacked_images = np.stack(images) if images else np.zeros((0, side, side, 3), np.uint8)
    stacked_masks = np.stack(masks) if masks else np.zeros((0, len(lesions), side, side), np.uint8)
    return stacked_images, stacked_masks, index, frames


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """float32 RGB in [0, 1] (..., 3) -> HSV in [0, 1] (hue as a fraction of the circle)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    delta = high - low
    safe = np.where(delta > 0, delta, np.float32(1))
    hue = np.where(high == r, (g - b) / safe, np.where(high == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = np.where(delta > 0, (hue / 6) % 1, 0)
    saturation = np.where(high > 0, delta / np.where(high > 0, high, np.float32(1)), 0)
    return np.stack([hue, saturation, high], axis=-1).astype(np.float32)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of rgb_to_hsv."""
    hue, saturation, value = hsv[..., 0] * 6, hsv[..., 1], hsv[..., 2]
    sector = np.floor(hue).astype(np.int64) % 6
    frac = hue - np.floor(hue)
    p, q, t = value * (1 - saturation), value * (1 - saturation * frac), value * (1 - saturation * (1 - frac))
    choices = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)]
    channels = [np.choose(sector, [c[k] for c in choices]) for k in range(3)]
    return np.stack(channels, axis=-1).astype(np.float32)


def augment_colour(rgb: np.ndarray, rng: np.random.Generator, hue: float, saturation: float, brightness: float,
                   contrast: float) -> np.ndarray:
    """float32 0..255 (P, P, 3) with the study's colour augmentation: hue shifted by up to `hue` of the circle,
    saturation and value scaled by 1 +- saturation / brightness, contrast about the mean by 1 +- contrast."""
    hsv = rgb_to_hsv(rgb / np.float32(255))
    hsv[..., 0] = (hsv[..., 0] + np.float32(rng.uniform(-hue, hue))) % 1
    hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(1 + rng.uniform(-saturation, saturation)), 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] * np.float32(1 + rng.uniform(-brightness, brightness)), 0, 1)
    out = hsv_to_rgb(hsv) * np.float32(255)
    gain, centre = np.float32(1 + rng.uniform(-contrast, contrast)), np.float32(out.mean(dtype=np.float64))
    return np.clip((out - centre) * gain + centre, 0, 255).astype(np.float32)
