"""Where the misses are: every true lesion of a domain with its area, its contrast and whether the operating point
finds it, every false-positive component, recall by area and by contrast, and a panel of missed lesions beside
false positives."""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from micropatch.core.fileio import read_png
from micropatch.evaluation.postprocess import operating_mask

AREA_BINS = (0, 50, 100, 200, 400, 800, np.inf)          # px; IDRiD MAs: p10 100 px, median 235 px
CONTRAST_BINS = (-np.inf, 5, 10, 20, 40, np.inf)          # grey levels of the enhanced green channel
RING_PX = 5                                               # the surround a lesion's contrast is measured against


def lesion_rows(image_id: str, enhanced: np.ndarray, probability_u8: np.ndarray, truth: np.ndarray,
                fov: np.ndarray, point: dict) -> tuple[list[dict], list[dict]]:
    """(true lesions, false-positive components) of one image at the operating point.

    A lesion's contrast is the mean enhanced green of a RING_PX ring around it minus its own mean (MAs and
    haemorrhages are dark: positive; exudates are bright: negative); its peak is its highest probability.
    """
    inside = np.where(fov, probability_u8, 0).astype(np.uint8)
    mask = operating_mask(inside, point["threshold"], point["min_area"])
    ring_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RING_PX + 1, 2 * RING_PX + 1))
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(truth.astype(np.uint8), connectivity=8)
    lesions = []
    for k in range(1, count):
        x, y, w, h, area = stats[k]
        y0, x0 = max(0, y - RING_PX), max(0, x - RING_PX)
        y1, x1 = min(truth.shape[0], y + h + RING_PX), min(truth.shape[1], x + w + RING_PX)
        own = labels[y0:y1, x0:x1] == k
        ring = (cv2.dilate(own.astype(np.uint8), ring_kernel) > 0) & ~truth[y0:y1, x0:x1]
        crop = enhanced[y0:y1, x0:x1].astype(np.float64)
        contrast = float(crop[ring].mean() - crop[own].mean()) if ring.any() else 0.0
        lesions.append({"image_id": image_id, "y": int(round(centroids[k][1])), "x": int(round(centroids[k][0])),
                        "area_px": int(area), "contrast": round(contrast, 2),
                        "peak": int(inside[y0:y1, x0:x1][own].max()), "found": bool(mask[y0:y1, x0:x1][own].any())})
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    touching = set(np.unique(labels[mask & truth]).tolist())
    # one pass over the image for every component's peak: a barely trained model can leave 10^5 components, and a
    # full-image comparison per component took hours on one real IDRiD frame
    peaks = ndimage.maximum(inside, labels, np.arange(1, count)) if count > 1 else []
    false_positives = [{"image_id": image_id, "y": int(round(centroids[k][1])), "x": int(round(centroids[k][0])),
                        "area_px": int(stats[k, cv2.CC_STAT_AREA]), "peak": int(peaks[k - 1])}
                       for k in range(1, count) if k not in touching]
    return lesions, false_positives


def recall_by(lesions: list[dict], key: str, bins: tuple) -> list[dict]:
    """Recall of the lesions in each [low, high) bin of `key`; bins without lesions are left out."""
    values = np.array([r[key] for r in lesions], float)
    found = np.array([r["found"] for r in lesions], bool)
    out = []
    for low, high in zip(bins[:-1], bins[1:]):
        chosen = (values >= low) & (values < high)
        if chosen.any():
            out.append({f"{key}_from": float(low) if np.isfinite(low) else None,
                        f"{key}_to": float(high) if np.isfinite(high) else None,
                        f"{key}_median": float(np.median(values[chosen])), "lesions": int(chosen.sum()),
                        "recall": float(found[chosen].mean())})
    return out


def panel(crops: list[tuple[str, np.ndarray]], path, title: str, columns: int = 8) -> None:
    """A grid of labelled crops (the first row: missed lesions, the second: false positives)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(crops) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.8 * columns, 2.0 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (label, crop) in zip(axes.ravel(), crops):
        if crop is None:  # padding, so false positives start a new row
            continue
        ax.imshow(crop, interpolation="nearest")
        ax.set_title(label, fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def crop_around(rgb: np.ndarray, y: int, x: int, size: int = 48) -> np.ndarray:
    """A size x size crop of rgb centred on (y, x), clipped to the frame."""
    y0 = int(np.clip(y - size // 2, 0, rgb.shape[0] - size))
    x0 = int(np.clip(x - size // 2, 0, rgb.shape[1] - size))
    return rgb[y0:y0 + size, x0:x0 + size]


def outlined(enhanced: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """uint8 RGB of the enhanced green channel with true lesions outlined green and predictions red."""
    rgb = np.repeat(enhanced[..., None], 3, axis=2).copy()
    for mask, colour in ((truth, (0, 255, 0)), (predicted, (255, 0, 0))):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(rgb, contours, -1, colour, 1)
    return rgb


def domain_misses(image_ids: list[str], folder, pred_dir, lesion: str, point: dict,
                  n_crops: int = 8) -> tuple[list[dict], list[dict], list[tuple[str, np.ndarray]]]:
    """(lesions, false positives, crops) of one lesion class over a domain's images: the crops are the n_crops
    largest missed lesions, then the n_crops most confident false positives, outlined (truth green, prediction red)."""
    lesions, false_positives, images = [], [], {}
    for image_id in image_ids:
        enhanced = read_png(folder / f"{image_id}.png")
        probability = read_png(pred_dir / f"{image_id}_{lesion}.png")
        truth = read_png(folder / f"{image_id}_{lesion}.png") > 0
        fov = read_png(folder / f"{image_id}_fov.png") > 0
        found, fps = lesion_rows(image_id, enhanced, probability, truth, fov, point)
        lesions += found
        false_positives += fps
        missed = sorted((r for r in found if not r["found"]), key=lambda r: -r["area_px"])[:n_crops]
        confident = sorted(fps, key=lambda r: -r["peak"])[:n_crops]
        if missed or confident:  # keep only what the panel may show, not whole frames
            predicted = operating_mask(np.where(fov, probability, 0).astype(np.uint8), point["threshold"],
                                       point["min_area"])
            picture = outlined(enhanced, truth, predicted)
            for r in missed + confident:
                images[image_id, r["y"], r["x"]] = crop_around(picture, r["y"], r["x"])
    missed = sorted((r for r in lesions if not r["found"]), key=lambda r: -r["area_px"])[:n_crops]
    confident = sorted(false_positives, key=lambda r: -r["peak"])[:n_crops]
    crops = [(f"missed {r['image_id']}\n{r['area_px']} px, contrast {r['contrast']:.0f}",
              images[r["image_id"], r["y"], r["x"]]) for r in missed]
    crops += [(None, None)] * (n_crops - len(missed)) if confident else []
    crops += [(f"FP {r['image_id']}\n{r['area_px']} px, p {r['peak'] / 255:.2f}", images[r["image_id"], r["y"], r["x"]])
              for r in confident]
    return lesions, false_positives, crops
