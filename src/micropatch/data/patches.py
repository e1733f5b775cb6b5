"""Micro-patching: which 128x128 windows of a native image to keep, and the patch-set files."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from micropatch.core.fileio import atomic_path, read_png, save_npy, write_json

INDEX_COLUMNS = ("dataset", "image_id", "y", "x", "lesion_pixels")


def window_starts(length: int, size: int, stride: int) -> np.ndarray:
    """Start offsets (px) of windows of `size` every `stride` along `length`, the last flush with the end."""
    if length <= size:
        return np.array([0])
    starts = np.arange(0, length - size + 1, stride)
    if starts[-1] != length - size:
        starts = np.append(starts, length - size)
    return starts


def window_sums(mask: np.ndarray, size: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sums of a bool or uint8 (H, W) array in every window: (ys, xs, sums (len(ys), len(xs))) (pixel counts for a
    mask)."""
    integral = cv2.integral(mask.astype(np.uint8))  # int32 (H+1, W+1), 20x faster than numpy's cumsum
    ys = window_starts(mask.shape[0], size, stride)
    xs = window_starts(mask.shape[1], size, stride)
    y0, x0 = ys[:, None], xs[None, :]
    y1, x1 = np.minimum(y0 + size, mask.shape[0]), np.minimum(x0 + size, mask.shape[1])
    counts = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return ys, xs, counts


# Black top-hat size: a little wider than an IDRiD microaneurysm (median area 235 px, so ~17 px across), so that
# dots, thin vessels and their crossings respond, and large dark regions do not.
DARK_STRUCTURE_PX = 21


def dark_structures(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W): black top-hat of the enhanced green channel, bright where small dark structures are."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (DARK_STRUCTURE_PX, DARK_STRUCTURE_PX))
    return cv2.morphologyEx(image, cv2.MORPH_BLACKHAT, kernel)


def select_windows(lesion: np.ndarray, fov: np.ndarray, size: int, stride: int, background_keep: float,
                   rng: np.random.Generator, hard_negative_keep: float = 0.0, dark: np.ndarray | None = None,
                   lesion_jitter: int = 0) -> list[tuple[int, int, int]]:
    """(y, x, lesion_pixels) of kept windows: all grid windows with lesion, a random `background_keep` of the
    lesion-free grid windows in the FOV, then the options (both off by default, the paper's sampling):

    - hard_negative_keep: that fraction of the lesion-free FOV windows more, those not yet kept with the largest
      sum of `dark` (dark_structures of the image): background that looks most like a lesion;
    - lesion_jitter: that many windows more per lesion component, placed at random so the component's centre
      falls anywhere in the window's inner part (not only where the 64-px grid puts it).
    """
    ys, xs, lesion_counts = window_sums(lesion, size, stride)
    _, _, fov_counts = window_sums(fov, size, stride)
    draws = rng.random(lesion_counts.shape)  # one draw per window, so the choice does not depend on order
    background = (lesion_counts == 0) & (fov_counts > 0)
    keep = (lesion_counts > 0) | (background & (draws < background_keep))
    if hard_negative_keep > 0:
        if dark is None:
            raise ValueError("hard_negative_keep needs the image's dark_structures map")
        darkness = window_sums(dark, size, stride)[2].astype(np.float64)
        candidates = np.flatnonzero(background & ~keep)
        n_extra = min(len(candidates), int(round(hard_negative_keep * background.sum())))
        ranked = candidates[np.argsort(-darkness.ravel()[candidates], kind="stable")]
        keep.ravel()[ranked[:n_extra]] = True
    kept = [(int(ys[i]), int(xs[j]), int(lesion_counts[i, j])) for i, j in zip(*np.nonzero(keep))]
    if lesion_jitter > 0:
        count, _, _, centroids = cv2.connectedComponentsWithStats(lesion.astype(np.uint8), connectivity=8)
        height, width = lesion.shape
        margin = size // 8
        for cx, cy in centroids[1:]:
            for _ in range(lesion_jitter):
                dy, dx = rng.integers(margin, size - margin, size=2)
                y = int(np.clip(round(cy) - dy, 0, max(0, height - size)))
                x = int(np.clip(round(cx) - dx, 0, max(0, width - size)))
                kept.append((y, x, int(lesion[y:y + size, x:x + size].sum())))
    return kept


def write_patch_set(out_dir: Path, images: np.ndarray, masks: np.ndarray, index: list[dict], meta: dict) -> None:
    """Write images.npy (N, S, S) uint8, masks.npy (N, L, S, S) uint8 {0,1}, index.csv and meta.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_npy(out_dir / "images.npy", images)
    save_npy(out_dir / "masks.npy", masks)
    with atomic_path(out_dir / "index.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=INDEX_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(index)
    write_json(out_dir / "meta.json", meta)


def read_patch_index(out_dir: Path) -> list[dict]:
    """The index.csv rows of a patch set (y, x, lesion_pixels as int)."""
    with open(Path(out_dir) / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["y"], r["x"], r["lesion_pixels"] = int(r["y"]), int(r["x"]), int(r["lesion_pixels"])
    return rows


def read_patch_meta(out_dir: Path) -> dict:
    """meta.json of a patch set."""
    return json.loads((Path(out_dir) / "meta.json").read_text())


def resample(image: np.ndarray, fov: np.ndarray, lesion: np.ndarray,
             scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, fov, lesion masks (L, H, W)) resampled by `scale` (patchify.scale: the model's working scale, which
    inference applies to every photograph too): the image by area averaging, the FOV by nearest neighbour, a mask
    pixel lesion where at least half of the native pixels it covers are (the lesion areas stay unbiased)."""
    if scale == 1.0:
        return image, fov, lesion
    height, width = image.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    area = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    masks = np.stack([cv2.resize(m.astype(np.float32), size, interpolation=area) >= 0.5 for m in lesion])
    return (cv2.resize(image, size, interpolation=area),
            cv2.resize(fov.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0, masks)


def build_patch_set(rows: list[dict], preprocessed: Path, lesions: list[str], size: int, stride: int,
                    background_keep: float, seed: int, hard_negative_keep: float = 0.0,
                    lesion_jitter: int = 0, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, list[dict], dict]:
    """Patches of the manifest rows: images (N, S, S) uint8, masks (N, L, S, S) uint8, index rows, per-image counts.

    hard_negative_keep, lesion_jitter: select_windows' options (the train stage's split only); scale: each image
    resampled by it first (resample), the windows' y, x then in the resampled frame.
    """
    images, masks, index, per_image = [], [], [], {}
    for row in tqdm(rows, desc="patchify", unit="img"):
        folder = Path(preprocessed) / row["dataset"]
        image, fov, lesion = resample(
            read_png(folder / f"{row['image_id']}.png"), read_png(folder / f"{row['image_id']}_fov.png") > 0,
            np.stack([read_png(folder / f"{row['image_id']}_{name}.png") > 0 for name in lesions]), scale)
        # seeded per image (by its bytes), so adding an image never changes another image's patches
        rng = np.random.default_rng([seed, int(row["sha256"][:12], 16)])
        dark = dark_structures(image) if hard_negative_keep > 0 else None
        kept = select_windows(lesion.any(axis=0), fov, size, stride, background_keep, rng, hard_negative_keep, dark,
                              lesion_jitter)
        for y, x, lesion_pixels in kept:
            images.append(image[y:y + size, x:x + size])
            masks.append(lesion[:, y:y + size, x:x + size])
            index.append({"dataset": row["dataset"], "image_id": row["image_id"], "y": y, "x": x,
                          "lesion_pixels": lesion_pixels})
        per_image[f"{row['dataset']}/{row['image_id']}"] = {
            "lesion_patches": sum(1 for k in kept if k[2] > 0), "background_patches": sum(1 for k in kept if k[2] == 0)}
    stacked_images = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
    stacked_masks = np.stack(masks).astype(np.uint8) if masks else np.zeros((0, len(lesions), size, size), np.uint8)
    return stacked_images, stacked_masks, index, per_image
