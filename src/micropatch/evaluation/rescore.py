"""Rescoring a finished record's ranking figures from its committed curves, after a metric's definition changes.

A record keeps its 256-level PR curves (metrics/plots/pr/<domain>_<lesion>.json) and its per-image truth pixel
counts (metrics/per_image/<domain>.csv), not its probability maps: they are large, and rebuilding them costs the
record's inference. The curve holds the pooled (2, 256) histogram up to rounding: at level v, TP = recall x
positives and FP = TP (1 - P) / P, and each level's counts are the differences between neighbouring levels. Any
count of positives gives the same ratios, so the per-image truth counts need not be the histogram's own. From
it aupr_11, AP and the degenerate flag are recomputed with today's metrics; every other figure (those of the
operating point, the lesion-level ones) is left as the score stage wrote it.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from micropatch.core.fileio import write_json, write_text
from micropatch.evaluation.metrics import LEVELS, aupr_11, average_precision, is_degenerate
from micropatch.evaluation.score import cross_domain_rows, cross_domain_table, lesion_mean, write_headlines

RANKING_KEYS = ("aupr_11", "ap", "degenerate")  # what a curve determines


def histogram_from_curve(curve: list[dict], positives: int) -> np.ndarray:
    """The pooled (2, 256) histogram, int64, behind a score stage's PR curve (records of threshold, recall and
    precision per level, precision 1 where nothing is predicted) and the domain's number of true pixels."""
    if len(curve) != LEVELS:
        raise ValueError(f"a PR curve of {len(curve)} levels, not {LEVELS}")
    recall = np.array([point["recall"] for point in curve], np.float64)
    precision = np.array([point["precision"] for point in curve], np.float64)
    tp = np.rint(recall * positives)  # predicted positive at level >= v
    fp = np.rint(np.where(tp > 0, tp * (1 - precision) / np.maximum(precision, 1e-300), 0.0))
    hist = np.stack([fp - np.r_[fp[1:], 0.0], tp - np.r_[tp[1:], 0.0]])
    return np.maximum(hist, 0).astype(np.int64)  # rounding can leave a level at -1 where two levels tie


def truth_pixels(per_image_csv: Path, lesion: str) -> int:
    """The domain's true pixels of one lesion: the sum of its per-image rows' truth_pixels."""
    with open(per_image_csv, newline="") as f:
        return sum(int(row["truth_pixels"]) for row in csv.DictReader(f) if row.get("lesion", lesion) == lesion)


def rescore_record(metrics: Path) -> dict[tuple[str, str], dict[str, tuple]]:
    """Recompute RANKING_KEYS of every domain and lesion under a record's metrics folder; rewrite the domain JSONs,
    their headline files and the cross-domain table. Returns {(domain, lesion): {key: (before, after)}}."""
    changes, results, zero_shot = {}, {}, {}
    for path in sorted((metrics / "domains").glob("*.json")):
        scored = json.loads(path.read_text())
        name = scored["domain"]
        for lesion, summary in scored["lesions"].items():
            curve = json.loads((metrics / "plots" / "pr" / f"{name}_{lesion}.json").read_text())
            hist = histogram_from_curve(curve, truth_pixels(metrics / "per_image" / f"{name}.csv", lesion))
            after = {"aupr_11": aupr_11(hist), "ap": average_precision(hist), "degenerate": is_degenerate(hist)}
            changes[name, lesion] = {key: (summary.get(key), after[key]) for key in RANKING_KEYS}
            summary.update(after)
        if "lesion_mean" in scored:
            scored["lesion_mean"] = lesion_mean(scored["lesions"])
        write_json(path, scored)
        write_headlines(scored, metrics / "headline")
        results[name], zero_shot[name] = scored["lesions"], scored["zero_shot"]
    rows = cross_domain_rows(results, zero_shot)
    write_json(metrics / "cross_domain.json", rows)
    write_text(metrics / "cross_domain.md", cross_domain_table(rows))
    return changes
