"""A study's one figure per (strategy, domain): the lesion mean of a domain's scores, read from the score stage's
JSON or scored from a folder of maps as the score stage scores. Torch-free: the tables read it, and the soups,
which need torch, score with it."""
from __future__ import annotations

import json
import math
from pathlib import Path

from micropatch.evaluation.score import lesion_mean, score_domain


def summary_scores(scored: dict) -> dict:
    """{dice, ap, aupr_11, degenerate, lesions_scored} of a domain's score JSON: the lesion mean
    (evaluation.lesion_mean) over the
    lesions its test images hold (truth lesions > 0). A lesion absent from a domain's few held-out images has no
    Dice to speak of: any false positive makes it 0, none makes it 1, which would decide a strategy's mean."""
    present = {lesion: s for lesion, s in scored["lesions"].items() if s["lesions"] > 0}
    if not present:
        return {"dice": math.nan, "ap": math.nan, "aupr_11": math.nan, "degenerate": False, "lesions_scored": ""}
    summary = lesion_mean(present)  # of one lesion: that lesion's
    # sorted: the score stage's JSON has sorted keys, a folder scored here has the params' order; one spelling
    return {"dice": summary["dice"], "ap": summary["ap"], "aupr_11": summary["aupr_11"],
            "degenerate": any(s["degenerate"] for s in present.values()), "lesions_scored": "+".join(sorted(present))}


def score_folder(folder: Path, preprocessed: Path, params: dict) -> dict:
    """summary_scores of a folder of maps with its domain.json, scored as the score stage scores
    (evaluation), summarised as summary_scores does."""
    domain = json.loads((folder / "domain.json").read_text())
    by_lesion, _ = score_domain(domain, folder, preprocessed, params, folder / "per_image.csv")
    return summary_scores({"lesions": by_lesion})
