"""Scoring a domain's probability maps against its truths, one image at a time (memory flat in image count)."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from micropatch.core.fileio import atomic_path, read_png, write_json
from micropatch.evaluation.metrics import (
    image_histograms,
    image_lesion_counts,
    lesion_summary,
    mask_lesion_counts,
    scores,
    summarise,
)
from micropatch.evaluation.postprocess import OPERATING_DEFAULTS, lesion_point, operating_mask

log = logging.getLogger(__name__)


def score_images(items, threshold: float, min_area: int = 0, bootstrap_draws: int = 1000,
                 seed: int = 0, min_areas: dict[str, int] | None = None) -> tuple[dict, list[dict]]:
    """Pooled pixel + lesion-level summary and per-image rows from (image_id, probability_u8, truth, fov) items.

    P/R/Dice/IoU, lesion sensitivity and FPs/image are those of the operating point (threshold, min_area:
    postprocess.operating_mask; min_areas: an image's own, where it was predicted rescaled); aupr_11, AP and the
    curves rank the probabilities. Items are consumed one at a time, so memory stays flat in the number of images.
    """
    hists, lesion_counts, pixel_counts, lesion_hits, rows = [], [], [], [], []
    for image_id, probability_u8, truth, fov in items:
        hists.append(image_histograms(probability_u8, truth, fov))
        lesion_counts.append(image_lesion_counts(probability_u8, truth, fov))
        inside = probability_u8 if fov is None else np.where(fov, probability_u8, 0).astype(np.uint8)
        mask = operating_mask(inside, threshold, (min_areas or {}).get(image_id, min_area))
        pixels = (int((mask & truth).sum()), int((mask & ~truth).sum()), int((~mask & truth).sum()))
        lesions, found, false_positives = mask_lesion_counts(mask, truth)
        pixel_counts.append(pixels)
        lesion_hits.append((lesions, found, false_positives))
        rows.append({"image_id": image_id, **scores(*pixels), "truth_pixels": pixels[0] + pixels[2],
                     "lesions": lesions, "lesions_found": found, "lesions_missed": lesions - found,
                     "false_positive_components": false_positives})
    summary = (summarise(hists, threshold, bootstrap_draws, seed, pixel_counts)
               | lesion_summary(lesion_counts, threshold, lesion_hits) | {"min_area": min_area})
    return summary, rows


def operating_point(domain: dict, params: dict, lesion: str | None = None) -> dict:
    """The threshold and min_area to score at: the model's (infer copies them into domain.json; a multi-lesion
    model's own per lesion, kept as `per_lesion` when no lesion is asked), unless params `score` gives a number,
    which then holds for every lesion."""
    model = OPERATING_DEFAULTS | domain.get("operating_point", {})
    own = lesion_point(model, lesion) if lesion else model
    point = {key: own[key] if params[key] == "model" else params[key] for key in OPERATING_DEFAULTS}
    if lesion is None and "per_lesion" in model and all(params[key] == "model" for key in OPERATING_DEFAULTS):
        point["per_lesion"] = model["per_lesion"]
    return point


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
    fingerprints = json.loads((folder / "fingerprint.json").read_text())["images"]
    annotated = {fp["image_id"]: fp["annotated"] for fp in fingerprints}
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

        point = operating_point(domain, params, lesion)
        summary, rows = score_images(items(), point["threshold"], point["min_area"], params["bootstrap_draws"],
                                     params["seed"])
        heights, widths = zip(*sizes)
        results[lesion] = summary | {"resolution": f"{int(np.median(widths))}x{int(np.median(heights))}"}
        all_rows += [{"lesion": lesion, **row} for row in rows]
    write_rows(per_image_csv, all_rows)
    return results, all_rows


# What `dvc metrics show` prints, one file per domain and lesion (metrics/headline/<domain>_<lesion>.json): the
# operating point's pixel scores, the two ranking scores and the lesion-level ones. Curves, per-threshold lists and
# the rest stay in metrics/domains/, a plain output, so the table stays readable.
HEADLINE_KEYS = ("precision", "recall", "dice", "aupr_11", "ap", "lesion_sensitivity", "fps_per_image", "froc")


def headline(summary: dict) -> dict:
    """The HEADLINE_KEYS of one lesion's summary (a domain JSON's lesions[lesion])."""
    return {key: summary[key] for key in HEADLINE_KEYS}


def write_headlines(domain_json: dict, folder: Path) -> None:
    """metrics/headline/<domain>_<lesion>.json of one domain's scores (the score stage's domains/<domain>.json)."""
    for lesion, summary in domain_json["lesions"].items():
        write_json(Path(folder) / f"{domain_json['domain']}_{lesion}.json", headline(summary))


CROSS_DOMAIN_KEYS = ("n_images", "resolution", "precision", "recall", "dice", "iou", "aupr_11", "ap", "degenerate",
                     "lesion_sensitivity", "fps_per_image", "froc")


# The scores a lesion mean is taken of: the cross-domain columns that are rates or per-image counts.
MEAN_KEYS = ("precision", "recall", "dice", "iou", "aupr_11", "ap", "lesion_sensitivity", "fps_per_image", "froc")
MEAN_ROW = "mean"


def lesion_mean(by_lesion: dict) -> dict:
    """The unweighted mean over the scored lesions of each MEAN_KEYS score (the study's "mean" column: each lesion
    counts once, whatever its pixel count); NaN when a lesion's score is NaN, never a mean over fewer lesions."""
    return ({"lesions": list(by_lesion), "n_images": max(s["n_images"] for s in by_lesion.values()),
             "resolution": next(iter(by_lesion.values()))["resolution"],
             "degenerate": any(s["degenerate"] for s in by_lesion.values())}
            | {k: float(np.mean([s[k] for s in by_lesion.values()])) for k in MEAN_KEYS})


def is_zero_shot(dataset: str, train_on: list[str] | tuple[str, ...]) -> bool:
    """A test domain is zero-shot for a model that trained on no image of its dataset (any split of it): the one
    rule of the score stage's tables and of the cross-dataset study's."""
    return dataset not in train_on


def cross_domain_rows(results: dict, zero_shot: dict[str, bool]) -> list[dict]:
    """One dict per (domain, lesion): the paper's cross-domain table columns (fractions, not %), and after a domain
    scored on more than one lesion, its lesion-mean row (lesion "mean")."""
    rows = []
    for domain, by_lesion in results.items():
        per_lesion = list(by_lesion.items()) + ([(MEAN_ROW, lesion_mean(by_lesion))] if len(by_lesion) > 1 else [])
        rows += [{"domain": domain, "lesion": lesion, "zero_shot": zero_shot[domain]}
                 | {k: s[k] for k in CROSS_DOMAIN_KEYS} for lesion, s in per_lesion]
    return rows


def cross_domain_table(rows: list[dict]) -> str:
    """Markdown of cross_domain_rows: domain, lesion, resolution, P, R, Dice, IoU (%), aupr_11 (marked * where the
    map is degenerate, with the footnote) and AP, lesion level."""
    lines = ["| domain | lesion | zero-shot | images | resolution | P % | R % | Dice % | IoU % | AUPR (11 thr) | AP | "
             "lesion sens. % | FPs/img | FROC |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in rows:
        lines.append(f"| {s['domain']} | {s['lesion']} | {'yes' if s['zero_shot'] else 'no'} | {s['n_images']} | "
                     f"{s['resolution']} | {100 * s['precision']:.2f} | {100 * s['recall']:.2f} | "
                     f"{100 * s['dice']:.2f} | {100 * s['iou']:.2f} | {aupr_11_cell(s)} | {s['ap']:.4f} | "
                     f"{100 * s['lesion_sensitivity']:.1f} | {s['fps_per_image']:.2f} | {s['froc']:.3f} |")
    return "\n".join(lines) + "\n" + (DEGENERATE_FOOTNOTE if any(s["degenerate"] for s in rows) else "")


# Beside every table that marks a degenerate map's aupr_11 (metrics.is_degenerate).
DEGENERATE_FOOTNOTE = ("\n\\* a degenerate map: fewer pixels marked at p >= 0.5 than a tenth of the true ones, "
                       "or none. "
                       "The IDRiD challenge's aupr_11 counts precision as 1 where nothing is predicted, so such a map "
                       "scores about 0.5 whatever it ranks; read AP.\n")


def aupr_11_cell(summary: dict) -> str:
    """aupr_11 to 4 places, marked * for a degenerate map (DEGENERATE_FOOTNOTE)."""
    return f"{summary['aupr_11']:.4f}{'*' if summary.get('degenerate') else ''}"
