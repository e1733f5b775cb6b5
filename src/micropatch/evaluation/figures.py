"""Figures a person can open: PR and FROC curves, cross-domain bars, qualitative panels with zoomed lesions."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import cv2
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from micropatch.core.fileio import (
    atomic_path,  # noqa: E402
    read_fundus,
    read_png,
)
from micropatch.evaluation.postprocess import lesion_point, operating_mask

TP_COLOUR, FP_COLOUR, FN_COLOUR = (0, 220, 0), (255, 40, 40), (40, 120, 255)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def curve_records(curve: dict[str, list], keys: tuple[str, ...]) -> list[dict]:
    """Columns of a curve as a list of row dicts, the JSON shape `dvc plots` reads."""
    return [dict(zip(keys, values)) for values in zip(*(curve[k] for k in keys))]


def best_median_worst(per_image: list[dict], lesion: str) -> dict[str, dict]:
    """The per-image rows of one lesion ranked by Dice (ties by image id): best, median and worst."""
    ranked = sorted((r for r in per_image if r["lesion"] == lesion), key=lambda r: (-float(r["dice"]), r["image_id"]))
    return {"best": ranked[0], "median": ranked[len(ranked) // 2], "worst": ranked[-1]}


def curves_figure(results: dict, path: Path) -> None:
    """PR (11-threshold and 256-level) and FROC curves of every (domain, lesion)."""
    fig, (pr, froc) = plt.subplots(1, 2, figsize=(11, 4.5))
    for domain, by_lesion in results.items():
        for lesion, s in by_lesion.items():
            curve = s["pr_curve"]
            line, = pr.plot(curve["recall"], curve["precision"], label=f"{domain} {lesion} (AP {s['ap']:.3f})")
            pr.plot(s["pr_11"]["recall"], s["pr_11"]["precision"], "o", color=line.get_color(), ms=4)
            c = s["froc_curve"]
            froc.plot(c["fps_per_image"], c["sensitivity"], "o-", ms=3,
                      label=f"{domain} {lesion} (FROC {s['froc']:.3f})")
    pr.set(xlabel="recall (pooled pixels)", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title="PR curve (dots: the 11 aupr_11 thresholds)")
    froc.set(xscale="log", xlabel="false-positive components per image", ylabel="lesion sensitivity",
             ylim=(0, 1.02), title="FROC")
    froc.axvspan(0.125, 8, color="0.92", zorder=0)
    for ax in (pr, froc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def bars_figure(results: dict, path: Path) -> None:
    """Grouped bars of pooled P / R / Dice (%) per domain and lesion."""
    labels = [f"{d}\n{lesion}" for d, by in results.items() for lesion in by]
    values = np.array([[by[lesion][k] for k in ("precision", "recall", "dice")]
                       for by in results.values() for lesion in by]) * 100
    fig, ax = plt.subplots(figsize=(max(5, 1.8 * len(labels)), 4))
    x = np.arange(len(labels))
    for i, name in enumerate(("precision", "recall", "Dice")):
        bars = ax.bar(x + (i - 1) * 0.27, values[:, i], 0.27, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set(xticks=x, xticklabels=labels, ylabel="%", ylim=(0, 105), title="Pixel scores per domain (operating point)")
    ax.legend()
    _save(fig, path)


TRAINING_SCORES = ("select_patch_dice", "select_dice", "select_aupr_11", "select_ap", "monitor_aupr_11", "monitor_ap")


def training_figure(history: list[dict], path: Path) -> None:
    """Train and selection-split loss, and the selection scores, per epoch (rows of metrics/train_history.tsv)."""
    epochs = [int(r["epoch"]) for r in history]
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in ("train_loss", "select_loss"):
        loss_ax.plot(epochs, [float(r[key]) for r in history], marker="o", label=key.replace("_", " "))
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_ax.legend()
    for key in TRAINING_SCORES:
        if key in history[0]:
            score_ax.plot(epochs, [float(r[key]) for r in history], marker="o", label=key.removeprefix("select_"))
    score_ax.set(xlabel="epoch", ylabel="score", title="selection split (full-image estimates but patch_dice)",
                 ylim=(0, 1))
    score_ax.legend(fontsize=8)
    _save(fig, path)


def overlay(rgb: np.ndarray, predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """uint8 RGB with true positives, false positives and misses painted in distinct colours."""
    out = rgb.copy()
    out[predicted & truth] = TP_COLOUR
    out[predicted & ~truth] = FP_COLOUR
    out[~predicted & truth] = FN_COLOUR
    return out


def lesion_crops(truth: np.ndarray, predicted: np.ndarray, n: int, size: int) -> list[tuple[int, int]]:
    """Up to n (y, x) crop corners centred on distinct lesions (truth first, then false positives)."""
    corners = []
    for mask in (truth, predicted & ~truth):
        count, _, _, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        for cx, cy in centroids[1:]:
            y = int(np.clip(cy - size // 2, 0, truth.shape[0] - size))
            x = int(np.clip(cx - size // 2, 0, truth.shape[1] - size))
            if all(abs(y - a) >= size or abs(x - b) >= size for a, b in corners):
                corners.append((y, x))
            if len(corners) == n:
                return corners
    return corners


def panel_figure(title: str, rgb: np.ndarray, probability_u8: np.ndarray, truth: np.ndarray, point: dict,
                 path: Path, crop: int = 96, n_crops: int = 4) -> None:
    """Native image, probability heatmap, TP/FP/miss overlay at the operating point {threshold, min_area}, and
    zoomed crops around lesions."""
    predicted = operating_mask(probability_u8, point["threshold"], point["min_area"])
    probability = probability_u8 / 255.0
    painted = overlay(rgb, predicted, truth)
    corners = lesion_crops(truth, predicted, n_crops, crop)
    fig = plt.figure(figsize=(15, 7.5))
    grid = fig.add_gridspec(2, max(3, 2 * max(1, len(corners))) , height_ratios=[2.2, 1])
    columns = grid.ncols // 3
    for i, (image, name) in enumerate(((rgb, "image"), (probability, "probability"), (painted, "overlay"))):
        ax = fig.add_subplot(grid[0, i * columns:(i + 1) * columns])
        ax.imshow(image, cmap="magma" if image.ndim == 2 else None, vmin=0, vmax=1 if image.ndim == 2 else None)
        ax.set_title(name if name != "overlay" else "overlay: TP green, FP red, missed blue", fontsize=9)
        ax.axis("off")
    for k, (y, x) in enumerate(corners):
        for j, image in enumerate((rgb, painted)):
            ax = fig.add_subplot(grid[1, 2 * k + j])
            ax.imshow(image[y:y + crop, x:x + crop], interpolation="nearest")
            ax.set_title(f"({y},{x}) {'image' if j == 0 else 'overlay'}", fontsize=7)
            ax.axis("off")
    fig.suptitle(title, fontsize=11)
    _save(fig, path)


def domain_panels(domain: dict, per_image: list[dict], pred_dir: Path, preprocessed: Path, sources: dict,
                  point: dict, out_dir: Path) -> None:
    """Best, median and worst image by Dice of each lesion of a domain, as panels in out_dir (at the operating
    point {threshold, min_area[, per_lesion]}).

    per_image: the domain's per-image rows (lesion, image_id, dice, ...); sources: image_id -> photograph path.
    """
    for lesion in domain["lesions"]:
        if not any(r["lesion"] == lesion for r in per_image):
            continue  # not annotated in this dataset: not scored, no panel
        for rank, row in best_median_worst(per_image, lesion).items():
            image_id = row["image_id"]
            probability = read_png(pred_dir / f"{image_id}_{lesion}.png")
            truth = read_png(preprocessed / domain["dataset"] / f"{image_id}_{lesion}.png") > 0
            panel_figure(f"{domain['domain']} {lesion} {rank} by Dice: {image_id} (Dice {float(row['dice']):.3f})",
                         read_fundus(sources[image_id]), probability, truth, lesion_point(point, lesion),
                         out_dir / f"{domain['domain']}_{lesion}_{rank}.png")
