"""Scoring a domain's probability maps against its truths, one image at a time (memory flat in image count)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .io import atomic_path, read_png
from .metrics import counts_at, image_histograms, scores, summarise


def score_domain(domain: dict, pred_dir: Path, preprocessed: Path, params: dict, per_image_csv: Path) -> dict:
    """{lesion: pooled + per-image-mean scores} for one domain; writes the per-image table as CSV."""
    threshold = params["threshold"]
    hists = {lesion: [] for lesion in domain["lesions"]}
    sizes, rows = [], []
    for image_id in tqdm(domain["image_ids"], desc=f"score {domain['domain']}", unit="img", leave=False):
        folder = preprocessed / domain["dataset"]
        fov = read_png(folder / f"{image_id}_fov.png") > 0
        sizes.append(fov.shape)
        for lesion in domain["lesions"]:
            truth = read_png(folder / f"{image_id}_{lesion}.png") > 0
            hist = image_histograms(read_png(pred_dir / f"{image_id}_{lesion}.png"), truth, fov)
            hists[lesion].append(hist)
            rows.append({"image_id": image_id, "lesion": lesion, **scores(*counts_at(hist, threshold)),
                         "truth_pixels": int(hist[1].sum())})
    with atomic_path(per_image_csv) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    heights, widths = zip(*sizes)
    resolution = f"{int(np.median(widths))}x{int(np.median(heights))}"
    return {lesion: summarise(h, threshold, params["bootstrap_draws"], params["seed"]) | {"resolution": resolution}
            for lesion, h in hists.items()}


def cross_domain_table(results: dict) -> str:
    """Markdown table: one row per (domain, lesion) with resolution, P, R, Dice, IoU (%), aupr_11."""
    lines = ["| domain | lesion | images | resolution | P % | R % | Dice % | IoU % | AUPR (11 thr) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for domain, by_lesion in results.items():
        for lesion, s in by_lesion.items():
            lines.append(f"| {domain} | {lesion} | {s['n_images']} | {s['resolution']} | {100 * s['precision']:.2f} | "
                         f"{100 * s['recall']:.2f} | {100 * s['dice']:.2f} | {100 * s['iou']:.2f} | "
                         f"{s['aupr_11']:.4f} |")
    return "\n".join(lines) + "\n"
