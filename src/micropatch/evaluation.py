"""Scoring a domain's probability maps against its truths, one image at a time (memory flat in image count)."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .fileio import atomic_path, read_png
from .metrics import (counts_at, image_histograms, image_lesion_counts, lesion_summary, operating_index, scores,
                      summarise, threshold_level)

log = logging.getLogger(__name__)


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


def score_domain(domain: dict, pred_dir: Path, preprocessed: Path, params: dict,
                 per_image_csv: Path) -> tuple[dict, list[dict]]:
    """({lesion: pooled, per-image-mean and lesion-level scores}, per-image rows) for one domain; writes the rows.

    Only images whose dataset annotates a lesion are scored for it (e-ophtha annotates MA only).
    """
    folder = preprocessed / domain["dataset"]
    annotated = {fp["image_id"]: fp["annotated"] for fp in json.loads((folder / "fingerprint.json").read_text())["images"]}
    results, all_rows = {}, []
    for lesion in domain["lesions"]:
        sizes = []
        image_ids = [i for i in domain["image_ids"] if annotated[i].get(lesion)]
        if not image_ids:
            log.info("score %s: %s is not annotated in dataset %s; not scored", domain["domain"], lesion,
                     domain["dataset"])
            continue

        def items():
            for image_id in tqdm(image_ids, desc=f"score {domain['domain']} {lesion}", unit="img", leave=False):
                fov = read_png(folder / f"{image_id}_fov.png") > 0
                sizes.append(fov.shape)
                yield (image_id, read_png(pred_dir / f"{image_id}_{lesion}.png"),
                       read_png(folder / f"{image_id}_{lesion}.png") > 0, fov)

        summary, rows = score_images(items(), params["threshold"], params["bootstrap_draws"], params["seed"])
        heights, widths = zip(*sizes)
        results[lesion] = summary | {"resolution": f"{int(np.median(widths))}x{int(np.median(heights))}"}
        all_rows += [{"lesion": lesion, **row} for row in rows]
    write_rows(per_image_csv, all_rows)
    return results, all_rows


CROSS_DOMAIN_KEYS = ("n_images", "resolution", "precision", "recall", "dice", "iou", "aupr_11", "ap",
                     "lesion_sensitivity", "fps_per_image", "froc")


def cross_domain_rows(results: dict, zero_shot: dict[str, bool]) -> list[dict]:
    """One dict per (domain, lesion): the paper's cross-domain table columns (fractions, not %)."""
    return [{"domain": domain, "lesion": lesion, "zero_shot": zero_shot[domain]} | {k: s[k] for k in CROSS_DOMAIN_KEYS}
            for domain, by_lesion in results.items() for lesion, s in by_lesion.items()]


def cross_domain_table(rows: list[dict]) -> str:
    """Markdown of cross_domain_rows: domain, lesion, resolution, P, R, Dice, IoU (%), aupr_11 and lesion level."""
    lines = ["| domain | lesion | zero-shot | images | resolution | P % | R % | Dice % | IoU % | AUPR (11 thr) | AP | "
             "lesion sens. % | FPs/img | FROC |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in rows:
        lines.append(f"| {s['domain']} | {s['lesion']} | {'yes' if s['zero_shot'] else 'no'} | {s['n_images']} | "
                     f"{s['resolution']} | {100 * s['precision']:.2f} | {100 * s['recall']:.2f} | "
                     f"{100 * s['dice']:.2f} | {100 * s['iou']:.2f} | {s['aupr_11']:.4f} | {s['ap']:.4f} | "
                     f"{100 * s['lesion_sensitivity']:.1f} | {s['fps_per_image']:.2f} | {s['froc']:.3f} |")
    return "\n".join(lines) + "\n"
