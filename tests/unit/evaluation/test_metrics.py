import numpy as np
import pytest

from micropatch.evaluation.metrics import (
    AUPR_THRESHOLDS,
    aupr_11,
    average_precision,
    counts_at,
    image_histograms,
    scores,
    summarise,
)


def square(center, size, shape=(40, 40)):
    mask = np.zeros(shape, bool)
    half = size // 2
    mask[center[0] - half:center[0] + half + 1, center[1] - half:center[1] + half + 1] = True
    return mask


def dice_of(pred, truth):
    hist = image_histograms(pred.astype(np.uint8) * 255, truth)
    return scores(*counts_at(hist, 0.5))["dice"]


def test_5x5_lesion_predicted_as_7x7_gives_dice_0_67():
    assert dice_of(square((20, 20), 7), square((20, 20), 5)) == pytest.approx(2 * 25 / (25 + 49))


def test_two_pixel_shift_of_a_5x5_lesion():
    assert dice_of(square((20, 22), 5), square((20, 20), 5)) == pytest.approx(2 * 15 / 50)


def test_empty_prediction_of_empty_truth_is_perfect_not_nan():
    empty = np.zeros((8, 8), bool)
    s = scores(*counts_at(image_histograms(np.zeros((8, 8), np.uint8), empty), 0.5))
    assert s == {"precision": 1.0, "recall": 1.0, "dice": 1.0, "iou": 1.0}


def test_pixels_outside_the_fov_never_count_as_predictions():
    truth = np.zeros((10, 10), bool)
    pred = np.full((10, 10), 255, np.uint8)
    fov = np.zeros((10, 10), bool)
    fov[:5] = True
    hist = image_histograms(pred, truth, fov)
    assert counts_at(hist, 0.5) == (0, 50, 0)


def direct_aupr_11(prob, truth):
    points = [(0.0, 1.0)]  # above the highest threshold nothing is predicted
    for t in AUPR_THRESHOLDS[::-1]:
        pred = prob >= t
        tp, fp, fn = (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()
        points.append((tp / (tp + fn) if tp + fn else 0.0, tp / (tp + fp) if tp + fp else 1.0))
    r, p = np.array(points).T
    return float(np.sum(np.diff(r) * (p[1:] + p[:-1]) / 2))


def direct_ap(prob, truth):
    order = np.argsort(-prob, kind="stable")
    p, t = prob[order], truth[order]
    tp, fp = np.cumsum(t), np.cumsum(~t)
    last = np.r_[np.diff(p) != 0, True]  # one point per distinct threshold
    recall, precision = tp[last] / t.sum(), tp[last] / (tp[last] + fp[last])
    return float(np.sum(np.diff(np.r_[0, recall]) * precision))


def test_streamed_aupr_and_ap_match_direct_computation_on_random_images():
    rng = np.random.default_rng(0)
    hists, probs, truths = [], [], []
    for _ in range(5):
        truth = rng.random((64, 64)) < 0.05
        prob_u8 = np.clip(rng.normal(60 + 120 * truth, 50), 0, 255).astype(np.uint8)
        hists.append(image_histograms(prob_u8, truth))
        probs.append(prob_u8.ravel() / 255.0)
        truths.append(truth.ravel())
    pooled = np.sum(hists, axis=0)
    prob, truth = np.concatenate(probs), np.concatenate(truths)
    assert aupr_11(pooled) == pytest.approx(direct_aupr_11(prob, truth), abs=1e-6)
    assert average_precision(pooled) == pytest.approx(direct_ap(prob, truth), abs=1e-6)


def test_summary_pools_pixels_and_bootstraps_per_image_dice():
    truth = square((20, 20), 5)
    shifts = [0, 1, 2, 3, 5]  # per-image Dice 1.0, 0.8, 0.6, 0.4, 0.0
    hists = [image_histograms(square((20, 20 + k), 5).astype(np.uint8) * 255, truth) for k in shifts]
    s = summarise(hists, 0.5, bootstrap_draws=400, seed=3)
    per_image = np.array([1.0, 0.8, 0.6, 0.4, 0.0])
    assert s["dice"] == pytest.approx(2 * 70 / (2 * 125))  # pooled: 70 of 125 true pixels hit, 125 predicted
    assert s["dice_per_image_mean"] == pytest.approx(per_image.mean())
    # the interval is the percentile bootstrap of the per-image mean, exactly: images resampled with replacement
    rng = np.random.default_rng(3)
    means = per_image[rng.integers(0, 5, (400, 5))].mean(axis=1)
    assert s["dice_per_image_ci95"] == pytest.approx([np.percentile(means, 2.5), np.percentile(means, 97.5)])
    assert 0.2 < s["dice_per_image_ci95"][0] < 0.56 < s["dice_per_image_ci95"][1] < 0.9


def test_oracle_threshold_is_the_dice_maximum_and_curves_are_consistent():
    truth = np.zeros((20, 20), bool)
    truth[5:10, 5:10] = True
    prob = np.zeros((20, 20), np.uint8)
    prob[5:10, 5:10] = 100  # the lesion at p = 0.39: missed at 0.5, found exactly at <= 100/255
    prob[15:18, 15:18] = 60
    s = summarise([image_histograms(prob, truth)], 0.5, bootstrap_draws=10)
    assert s["dice"] == 0.0
    assert s["oracle_dice"] == 1.0 and 60 / 255 < s["oracle_threshold_max_dice"] <= 100 / 255
    assert s["pr_11"]["recall"][4] == 0 and s["pr_11"]["recall"][3] == 1.0  # thresholds 0.4 and 0.3
    assert len(s["pr_curve"]["precision"]) == 256


# --- issue: honest ranking numbers (AP beside aupr_11, degenerate maps flagged) -----------------------------------


def ranked(prob_u8: np.ndarray, truth: np.ndarray) -> dict:
    return summarise([image_histograms(prob_u8, truth)], 0.5, bootstrap_draws=0)


def test_an_empty_map_scores_ap_at_the_prevalence_and_aupr_11_about_half_and_is_flagged():
    truth = np.zeros((100, 100), bool)
    truth[10:20, 10:30] = True  # prevalence 0.02
    s = ranked(np.zeros((100, 100), np.uint8), truth)
    assert s["ap"] == pytest.approx(truth.mean())
    assert s["aupr_11"] == pytest.approx(0.5, abs=0.02)
    assert s["degenerate"] is True


def test_a_perfect_map_scores_one_on_both_and_is_not_flagged():
    truth = np.zeros((100, 100), bool)
    truth[10:20, 10:30] = True
    s = ranked(truth.astype(np.uint8) * 255, truth)
    assert s["ap"] == pytest.approx(1.0) and s["aupr_11"] == pytest.approx(1.0) and s["degenerate"] is False


def test_a_map_marking_under_a_tenth_of_the_true_pixels_at_half_is_flagged():
    truth = np.zeros((100, 100), bool)
    truth[:, :50] = True  # 5,000 true pixels
    prob = np.full((100, 100), 100, np.uint8)  # p = 0.39 everywhere: a ranking, but nothing marked at 0.5
    prob[:49, :10] = 200  # 490 pixels marked: under a tenth
    assert ranked(prob, truth)["degenerate"] is True
    prob[:51, :10] = 200  # 510: over a tenth
    assert ranked(prob, truth)["degenerate"] is False


def test_ap_matches_scikit_learn_on_random_maps():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    for trial in range(5):
        truth = rng.random((80, 80)) < rng.uniform(0.01, 0.2)
        prob = np.clip(rng.normal(70 + 90 * truth, 60), 0, 255).astype(np.uint8)
        expected = average_precision_score(truth.ravel(), prob.ravel())
        assert ranked(prob, truth)["ap"] == pytest.approx(expected, abs=1e-9), trial
