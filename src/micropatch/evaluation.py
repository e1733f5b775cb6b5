"""Scoring a domain's probability maps against its truths, one image at a time (memory flat in image count)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .io import atomic_path, read_png
from .metrics import (counts_at, image_histograms, image_lesion_counts, lesion_summary, operating_index, scores,
                      summarise, threshold_level)


def score_images(items, threshold: float, bootstrap_draws: int = 1000, seed: int = 0) -> tuple[dict, list[dict]]:
    """Pooled pixel + lesion-level summary and per-image rows from (image_id, probability_u8, truth, fov) items.

    Items are consumed one at a time, so memory stays flat in the number of images.
    """
    hists, lesion_counts, rows = [], [], []
    level, operating = threshold_level(threshold), operating_index(threshold)
    for image_id, probability_u8, truth, fov in items:
        hist = image_histograms(probability_u8, truth, fov)
        counts = image_lesion_counts(probability_u8, truth, fov)
        hists.append(hist)
        lesion_counts.append(counts)
        found = int(counts["peak_hist"][level:].sum())
        rows.append({"image_id": image_id, **scores(*counts_at(hist, threshold)), "truth_pixels": int(hist[1].sum()),
                     "lesions": counts["lesions"], "lesions_found": found, "lesions_missed": counts["lesions"] - found,
                     "false_positive_components": int(counts["false_positives"][operating])})
    summary = summarise(hists, threshold, bootstrap_draws, seed) | lesion_summary(lesion_counts, threshold)
    return summary, rows


def write_rows(path: Path, rows: list[dict]) -> None:
    """Per-image table as CSV, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["image_id"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def score_domain(domain: dict, pred_dir: Path, preprocessed: Path, params: dict, per_image_csv: Path) -> dict:
    """{lesion: pooled, per-image-mean and lesion-level scores} for one domain; writes the per-image table."""
    folder = preprocessed / domain["dataset"]
    results, all_rows = {}, []
    for lesion in domain["lesions"]:
        sizes = []

        def items():
            for image_id in tqdm(domain["image_ids"], desc=f"score {domain['domain']} {lesion}", unit="img",
                                 leave=False):
                fov = read_png(folder / f"{image_id}_fov.png") > 0
                sizes.append(fov.shape)
                yield (image_id, read_png(pred_dir / f"{image_id}_{lesion}.png"),
                       read_png(folder / f"{image_id}_{lesion}.png") > 0, fov)

        summary, rows = score_images(items(), params["threshold"], params["bootstrap_draws"], params["seed"])
        heights, widths = zip(*sizes)
        results[lesion] = summary | {"resolution": f"{int(np.median(widths))}x{int(np.median(heights))}"}
        all_rows += [{"lesion": lesion, **row} for row in rows]
    write_rows(per_image_csv, all_rows)
    return results


def cross_domain_table(results: dict) -> str:
    """Markdown table: one row per (domain, lesion) with resolution, P, R, Dice, IoU (%), aupr_11."""
    lines = ["| domain | lesion | images | resolution | P % | R % | Dice % | IoU % | AUPR (11 thr) | AP | "
             "lesion sens. % | FPs/img | FROC |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for domain, by_lesion in results.items():
        for lesion, s in by_lesion.items():
            lines.append(f"| {domain} | {lesion} | {s['n_images']} | {s['resolution']} | {100 * s['precision']:.2f} | "
                         f"{100 * s['recall']:.2f} | {100 * s['dice']:.2f} | {100 * s['iou']:.2f} | "
                         f"{s['aupr_11']:.4f} | {s['ap']:.4f} | {100 * s['lesion_sensitivity']:.1f} | "
                         f"{s['fps_per_image']:.2f} | {s['froc']:.3f} |")
    return "\n".join(lines) + "\n"
