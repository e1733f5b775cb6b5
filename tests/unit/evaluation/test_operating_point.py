"""The operating point (threshold + minimum component area), its choice on the tune split, and how the pipeline's
scores use it; the tune split itself; patch-weighted full-image estimates; flip TTA and FOV rescaling."""
import numpy as np
import pytest
import torch

from micropatch.data.manifest import domain_rows
from micropatch.data.patches import dark_structures, select_windows, window_sums
from micropatch.data.split import assign_splits
from micropatch.evaluation.metrics import counts_at, image_histograms, scores, to_uint8
from micropatch.evaluation.postprocess import choose_operating_point, lesion_point, operating_counts, operating_mask
from micropatch.evaluation.score import operating_point, score_images
from micropatch.inference.modes import fov_scale, predict_probability, rescaled_probability
from micropatch.inference.windows import FlipAverage
from micropatch.training.selection import patch_weights, weighted_histograms


def blobs(shape=(64, 64)) -> tuple[np.ndarray, np.ndarray]:
    """A probability map with one big true blob, one 4-px false speck and one 30-px false blob."""
    prob = np.zeros(shape, np.uint8)
    truth = np.zeros(shape, bool)
    truth[10:20, 10:20] = True
    prob[9:21, 9:21] = 200
    prob[40:42, 40:42] = 250  # 4 px, false
    prob[50:55, 20:26] = 180  # 30 px, false
    return prob, truth


def test_operating_mask_drops_only_components_below_min_area():
    prob, _ = blobs()
    assert operating_mask(prob, 0.5, 0).sum() == 144 + 4 + 30
    assert operating_mask(prob, 0.5, 5).sum() == 144 + 30
    assert operating_mask(prob, 0.5, 31).sum() == 144
    assert operating_mask(prob, 0.8, 0).sum() == 4  # only the 250 speck is >= 0.8


def test_operating_counts_match_the_mask_for_every_point():
    rng = np.random.default_rng(0)
    prob = (rng.random((96, 96)) ** 6 * 255).astype(np.uint8)
    truth = rng.random((96, 96)) < 0.05
    fov = np.ones_like(truth)
    fov[:, :8] = False
    thresholds, areas = (0.2, 0.5, 0.8), (0, 3, 8)
    counts = operating_counts(prob, truth, fov, thresholds, areas)
    inside = np.where(fov, prob, 0).astype(np.uint8)
    for i, t in enumerate(thresholds):
        for j, a in enumerate(areas):
            mask = operating_mask(inside, t, a)
            assert counts[i, j].tolist() == [(mask & truth).sum(), (mask & ~truth).sum(), (~mask & truth).sum()]


def test_choice_takes_the_best_pooled_dice_and_ties_go_to_the_paper_point():
    prob, truth = blobs()
    chosen = choose_operating_point(operating_counts(prob, truth, None, (0.5, 0.9), (0, 5, 31)), (0.5, 0.9), (0, 5, 31))
    assert (chosen["threshold"], chosen["min_area"]) == (0.5, 31)  # removing both false blobs is best
    assert chosen["tune_dice"] == pytest.approx(200 / 244)  # the 12x12 prediction of a 10x10 lesion
    flat = np.zeros((3, 2, 3), np.int64)
    flat[..., 0] = 10  # every point scores Dice 1
    tie = choose_operating_point(flat, (0.3, 0.5, 0.7), (0, 10))
    assert (tie["threshold"], tie["min_area"]) == (0.5, 0)


def test_scores_at_the_operating_point_use_the_filtered_mask_and_ranking_scores_do_not_change():
    prob, truth = blobs()
    plain, _ = score_images([("a", prob, truth, None)], 0.5, 0, bootstrap_draws=10)
    filtered, rows = score_images([("a", prob, truth, None)], 0.5, 31, bootstrap_draws=10)
    assert plain["dice"] == pytest.approx(scores(*counts_at(image_histograms(prob, truth), 0.5))["dice"])
    assert filtered["precision"] == pytest.approx(100 / 144) and plain["precision"] == pytest.approx(100 / 178)
    assert plain["fps_per_image"] == 2 and filtered["fps_per_image"] == 0 and rows[0]["lesions_found"] == 1
    assert filtered["aupr_11"] == plain["aupr_11"] and filtered["ap"] == plain["ap"]


def test_score_uses_the_models_point_unless_params_give_a_number():
    domain = {"operating_point": {"threshold": 0.35, "min_area": 20}}
    assert operating_point(domain, {"threshold": "model", "min_area": "model"}) == {"threshold": 0.35, "min_area": 20}
    assert operating_point(domain, {"threshold": 0.5, "min_area": "model"}) == {"threshold": 0.5, "min_area": 20}
    assert operating_point({}, {"threshold": "model", "min_area": "model"}) == {"threshold": 0.5, "min_area": 0}


def fingerprint(i: int) -> dict:
    return {"dataset": "idrid", "image_id": f"IDRiD_{i:02d}", "patient_key": f"p{i // 2}", "official_split": "train",
            "sha256": f"{i:064x}", "phash": f"{(i * 2654435761) % 2 ** 64:064x}", "height": 10, "width": 10,
            "source": "x", "lesion_pixels": {"MA": i % 3}}


def test_a_multi_lesion_model_is_scored_at_each_lesions_own_point_unless_params_give_a_number():
    domain = {"operating_point": {"threshold": 0.4, "min_area": 10,
                                  "per_lesion": {"MA": {"threshold": 0.15, "min_area": 50},
                                                 "EX": {"threshold": 0.6, "min_area": 0}}}}
    model = {"threshold": "model", "min_area": "model"}
    assert operating_point(domain, model, "MA") == {"threshold": 0.15, "min_area": 50}
    assert operating_point(domain, model, "EX") == {"threshold": 0.6, "min_area": 0}
    assert operating_point(domain, model, "HE") == {"threshold": 0.4, "min_area": 10}  # none of its own
    assert operating_point(domain, model)["per_lesion"]["MA"]["threshold"] == 0.15
    forced = operating_point(domain, {"threshold": 0.5, "min_area": "model"}, "MA")
    assert forced == {"threshold": 0.5, "min_area": 50}  # a number holds for every lesion
    assert "per_lesion" not in operating_point(domain, {"threshold": 0.5, "min_area": "model"})
    assert lesion_point({"threshold": 0.3}, "SE") == {"threshold": 0.3, "min_area": 0}


def test_tune_split_takes_whole_patients_from_the_training_side_and_is_never_a_test_domain():
    rows = assign_splits([fingerprint(i) for i in range(1, 55)], ["idrid"], 0.2037, 42, merge_near_duplicates=False,
                         tune_fraction=0.14)
    splits = {s: {r["patient_key"] for r in rows if r["split"] == s} for s in ("train", "tune", "val")}
    assert splits["tune"] and not (splits["tune"] & splits["train"]) and not (splits["tune"] & splits["val"])
    without = assign_splits([fingerprint(i) for i in range(1, 55)], ["idrid"], 0.2037, 42, merge_near_duplicates=False)
    val_ids = lambda manifest: [r["image_id"] for r in manifest if r["split"] == "val"]  # noqa: E731
    assert val_ids(rows) == val_ids(without)
    with pytest.raises(Exception, match="training images .split train or tune"):
        domain_rows(rows, "t", {"dataset": "idrid", "split": "tune"})


def test_weighted_histograms_count_each_patch_weight_times():
    rng = np.random.default_rng(1)
    probability = rng.random((5, 1, 16, 16)).astype(np.float32)
    truth = rng.random((5, 1, 16, 16)) < 0.1
    weights = np.array([1, 3, 1, 2, 1])
    repeated = sum(w * image_histograms(to_uint8(probability[k, 0]), truth[k, 0]) for k, w in enumerate(weights))
    assert np.array_equal(weighted_histograms(probability, truth, weights)[0], repeated)
    assert patch_weights([0, 5, 0], 0.1).tolist() == [10.0, 1.0, 10.0]


def test_hard_negatives_are_the_darkest_background_windows_and_jitter_windows_hold_their_lesion():
    rng = np.random.default_rng(2)
    image = np.full((512, 512), 150, np.uint8)
    image[300:306, 100:400] = 40  # a thin dark vessel through some background windows
    lesion = np.zeros((512, 512), bool)
    lesion[60:66, 60:66] = True
    fov = np.ones_like(lesion)
    plain = select_windows(lesion, fov, 128, 64, 0.0, np.random.default_rng(0))
    assert plain == select_windows(lesion, fov, 128, 64, 0.0, np.random.default_rng(0), 0.0, None, 0)
    hard = select_windows(lesion, fov, 128, 64, 0.0, np.random.default_rng(0), 0.1, dark_structures(image))
    extra = set(hard) - set(plain)
    assert extra and all(y <= 305 and y + 128 >= 300 for y, x, _ in extra)  # each crosses the vessel
    jittered = select_windows(lesion, fov, 128, 64, 0.0, rng, lesion_jitter=3)
    assert len(jittered) == len(plain) + 3 and all(n == 36 for _, _, n in jittered[len(plain):])
    assert len({(y, x) for y, x, _ in jittered[len(plain):]}) > 1  # random offsets, not the grid's
    _, _, sums = window_sums(image, 128, 64)  # uint8 images sum like masks
    assert sums.max() <= 128 * 128 * 255


class Bright(torch.nn.Module):
    """A fixed 'model' whose logit is a linear function of its normalised input, asymmetric so flips matter."""

    def forward(self, x):
        ramp = torch.linspace(0, 1, x.shape[-1])
        return 3 * x + ramp


def test_flip_average_is_the_mean_probability_of_the_four_flips():
    x = torch.randn(2, 1, 8, 8)
    model = Bright()
    manual = sum(torch.flip(torch.sigmoid(model(torch.flip(x, d) if d else x)), d) if d else torch.sigmoid(model(x))
                 for d in ((), (3,), (2,), (2, 3))) / 4
    assert torch.allclose(torch.sigmoid(FlipAverage(model)(x)), manual, atol=1e-6)


def test_rescaled_prediction_is_the_native_one_at_the_training_diameter_and_in_place_when_scaled():
    image = np.full((256, 384), 120, np.uint8)
    image[100:120, 200:220] = 250
    fov = np.ones(image.shape, bool)
    params = {"mode": "paper", "precision": "fp32", "batch_size": 8, "window": 64, "stride": 32,
              "calibration_windows": 4, "refine_threshold": 0.15}
    native = predict_probability(Bright(), image, fov, params)
    same = predict_probability(Bright(), image, fov, params | {"fov_diameter": 384, "rescale_fov": True})
    assert np.array_equal(native, same)
    assert fov_scale(fov, params | {"fov_diameter": 192, "rescale_fov": True}) == (384, 0.5)
    halved = rescaled_probability(Bright(), image, fov, params, 0.5)
    assert np.array_equal(halved, predict_probability(Bright(), image, fov, params | {"fov_diameter": 192,
                                                                                     "rescale_fov": True}))
    assert halved.shape == native.shape
    peak = np.unravel_index(np.argmax(halved[0][:, :300]), halved[0][:, :300].shape)
    assert 95 <= peak[0] <= 125 and 195 <= peak[1] <= 225  # the bright spot stays where it was
    with pytest.raises(ValueError, match="FOV diameter"):
        predict_probability(Bright(), image, fov, params | {"rescale_fov": True})


def test_false_positive_peaks_are_each_components_maximum_also_with_thousands_of_components():
    """One pass over the image (ndimage.maximum), checked against a per-component oracle; a noisy map of a barely
    trained model has ~10^5 components on a real frame, where a full-image pass per component took hours."""
    import cv2

    from micropatch.evaluation.misses import lesion_rows
    from micropatch.evaluation.postprocess import operating_mask

    rng = np.random.default_rng(0)
    probability = (rng.random((200, 300)) * 255).astype(np.uint8)
    truth = np.zeros(probability.shape, bool)
    truth[50:60, 50:60] = True
    enhanced = rng.integers(0, 255, probability.shape).astype(np.uint8)
    point = {"threshold": 0.5, "min_area": 0}
    lesions, false_positives = lesion_rows("x", enhanced, probability, truth, np.ones(probability.shape, bool), point)
    mask = operating_mask(probability, 0.5, 0)
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    touching = set(np.unique(labels[mask & truth]).tolist())
    oracle = [int(probability[labels == k].max()) for k in range(1, count) if k not in touching]
    assert len(oracle) > 100 and [fp["peak"] for fp in false_positives] == oracle
    assert len(lesions) == 1
