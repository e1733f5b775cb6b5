"""Rescoring from committed curves gives what scoring the maps gives (micropatch.evaluation.rescore)."""
import csv
import json

import numpy as np
import pytest

from micropatch.core.fileio import write_json
from micropatch.evaluation.figures import curve_records
from micropatch.evaluation.metrics import image_histograms, summarise
from micropatch.evaluation.rescore import histogram_from_curve, rescore_record


def maps(seed: int, signal: float):
    """(probability uint8, truth bool) pairs: truth a sparse pattern, probability noisy around it."""
    rng = np.random.default_rng(seed)
    for _ in range(3):
        truth = rng.random((96, 128)) < 0.02
        noise = rng.random(truth.shape)
        probability = np.clip(signal * truth + (1 - signal) * noise, 0, 1)
        yield (probability * 255).round().astype(np.uint8), truth


@pytest.mark.parametrize("signal", [0.9, 0.5, 0.05, 0.0])
def test_the_histogram_behind_a_curve_gives_the_scores_of_the_maps(signal):
    hists = [image_histograms(p, t, None) for p, t in maps(0, signal)]
    summary = summarise(hists, 0.5, bootstrap_draws=0)
    curve = curve_records(summary["pr_curve"], ("threshold", "recall", "precision"))
    positives = int(np.sum(hists, axis=0)[1].sum())
    for scale in (1, 7):  # any count of positives keeps the ratios
        rebuilt = summarise([histogram_from_curve(curve, positives * scale)], 0.5, bootstrap_draws=0)
        assert rebuilt["aupr_11"] == pytest.approx(summary["aupr_11"], abs=1e-9)
        assert rebuilt["ap"] == pytest.approx(summary["ap"], abs=1e-9)
        assert rebuilt["degenerate"] == summary["degenerate"]


def test_a_curve_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="255 levels"):
        histogram_from_curve([{"recall": 1.0, "precision": 0.1}] * 255, 10)


def test_a_record_is_rescored_in_place_and_only_its_ranking_figures_move(tmp_path):
    hists = [image_histograms(p, t, None) for p, t in maps(1, 0.6)]
    summary = summarise(hists, 0.5, bootstrap_draws=0)
    curve = curve_records(summary.pop("pr_curve"), ("threshold", "recall", "precision"))
    for key in ("pr_11", "oracle_threshold_max_dice", "oracle_dice"):
        summary.pop(key)
    truth = [int(h[1].sum()) for h in hists]
    stale = summary | {"aupr_11": 0.123, "degenerate": None, "resolution": "128x96", "lesion_sensitivity": 0.5,
                       "fps_per_image": 1.0, "froc": 0.25}
    write_json(tmp_path / "domains" / "val.json", {"domain": "val", "zero_shot": False, "lesions": {"MA": stale}})
    write_json(tmp_path / "plots" / "pr" / "val_MA.json", curve)
    (tmp_path / "per_image").mkdir()
    with open(tmp_path / "per_image" / "val.csv", "w", newline="") as f:
        csv.writer(f).writerows([["lesion", "image_id", "truth_pixels"]]
                                + [["MA", f"i{n}", count] for n, count in enumerate(truth)])
    changes = rescore_record(tmp_path)
    assert changes["val", "MA"]["aupr_11"] == (0.123, pytest.approx(summary["aupr_11"], abs=1e-9))
    rescored = json.loads((tmp_path / "domains" / "val.json").read_text())["lesions"]["MA"]
    assert rescored["aupr_11"] == pytest.approx(summary["aupr_11"], abs=1e-9)
    assert rescored["degenerate"] is False and rescored["dice"] == summary["dice"]
    headline = json.loads((tmp_path / "headline" / "val_MA.json").read_text())
    assert headline["aupr_11"] == rescored["aupr_11"]
    assert f"{rescored['aupr_11']:.4f}" in (tmp_path / "cross_domain.md").read_text()
