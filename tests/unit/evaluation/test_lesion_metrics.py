import json

import numpy as np
from PIL import Image

from micropatch.cli import main
from micropatch.evaluation.metrics import image_lesion_counts, lesion_summary


def dots(shape, centers, radius=2):
    mask = np.zeros(shape, bool)
    for y, x in centers:
        mask[y - radius:y + radius + 1, x - radius:x + radius + 1] = True
    return mask


def test_one_touching_pixel_finds_a_lesion_and_a_stray_component_is_a_false_positive():
    truth = dots((64, 64), [(10, 10), (40, 40)])
    prob = np.zeros((64, 64), np.uint8)
    prob[12, 12] = 200  # a single pixel on the first lesion's edge
    prob[30:33, 50:53] = 220  # a blob touching nothing
    s = lesion_summary([image_lesion_counts(prob, truth)], 0.5)
    assert s["lesions"] == 2 and s["lesion_sensitivity"] == 0.5 and s["fps_per_image"] == 1.0


def test_froc_sweeps_the_threshold():
    truth = dots((64, 64), [(10, 10), (40, 40)])
    prob = np.zeros((64, 64), np.uint8)
    prob[10, 10], prob[40, 40] = 250, 100  # one confident hit, one weak hit
    prob[55, 5] = 90  # one weak false positive
    s = lesion_summary([image_lesion_counts(prob, truth)], 0.5)
    assert s["lesion_sensitivity"] == 0.5 and s["fps_per_image"] == 0
    assert s["froc_sensitivities"]["0.125"] == 1.0  # threshold 96/255 finds both with no FP
    assert s["froc"] == 1.0


def test_without_true_lesions_sensitivity_and_froc_are_undefined_and_fps_are_counted():
    """No true lesion: sensitivity (found / true) and FROC (mean sensitivity) are NaN, not a made-up 0 or 1, which
    a JSON file holds as NaN; false positives are still counted per image."""
    empty = lesion_summary([image_lesion_counts(np.zeros((8, 8), np.uint8), np.zeros((8, 8), bool))], 0.5)
    assert empty["lesions"] == 0 and empty["fps_per_image"] == 0
    assert np.isnan(empty["lesion_sensitivity"]) and np.isnan(empty["froc"])
    spot = np.zeros((8, 8), np.uint8)
    spot[2, 2] = 255
    one_fp = lesion_summary([image_lesion_counts(spot, np.zeros((8, 8), bool))], 0.5)
    assert one_fp["fps_per_image"] == 1 and np.isnan(one_fp["lesion_sensitivity"])
    # the same at an operating point's exact counts (components removed): (lesions, found, false positives)
    at_point = lesion_summary([image_lesion_counts(spot, np.zeros((8, 8), bool))], 0.5, operating=[(0, 0, 1)])
    assert at_point["fps_per_image"] == 1 and np.isnan(at_point["lesion_sensitivity"])


def test_evaluate_command_pairs_by_stem(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    truth = dots((40, 40), [(20, 20)])
    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "truth" / "eye1.png")
    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "pred" / "eye1.png")
    np.save(tmp_path / "pred" / "eye2.npy", np.zeros((40, 40)))
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "truth" / "eye2.png")
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"),
                 "--csv", str(tmp_path / "rows.csv")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dice"] == 1.0 and out["n_images"] == 2 and out["lesion_sensitivity"] == 1.0
    assert (tmp_path / "rows.csv").read_text().count("\n") == 3
    (tmp_path / "pred" / "eye2.npy").unlink()
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth")]) == 2


def test_froc_interpolates_exactly_as_monai():
    from monai.metrics import compute_froc_score

    from micropatch.evaluation.metrics import FROC_FPS_PER_IMAGE, froc_sensitivities

    rng = np.random.default_rng(0)
    for _ in range(20):  # curves from the lowest threshold (many FPs, high sensitivity) to the highest
        fps = np.sort(rng.uniform(0, 30, 33))[::-1]
        sensitivity = np.sort(rng.uniform(0, 1, 33))[::-1]
        assert np.isclose(froc_sensitivities(fps, sensitivity).mean(),
                          compute_froc_score(fps, sensitivity, FROC_FPS_PER_IMAGE))


def test_a_saturated_model_scores_its_sensitivity_at_p_1_not_zero():
    """Maps that reach p = 1 on false positives never get under 1/8 FP per image; the FROC holds the
    sensitivity at the highest threshold below that rate (MONAI's convention) instead of dropping to 0."""
    truth = dots((64, 64), [(10, 10), (40, 40)])
    prob = np.zeros((64, 64), np.uint8)
    prob[10, 10] = 255  # one lesion found even at p = 1
    prob[50:53, 50:53] = 255  # and one saturated false positive
    s = lesion_summary([image_lesion_counts(prob, truth)], 0.5)
    assert s["fps_per_image"] == 1.0 and s["lesion_sensitivity"] == 0.5
    assert s["froc_sensitivities"]["0.125"] == 0.5 and s["froc"] == 0.5
