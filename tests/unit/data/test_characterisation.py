"""The characterisation stage's rules: labelling style (fine / mixed / coarse) from per-image lesion count and mean
area, told apart on the generator's three styles drawn over the same photographs; the quality grade (not MCF-Net)
on degraded copies of a photograph."""
from dataclasses import replace

import cv2
import numpy as np
import pytest

from micropatch.data.characterisation import labelling_style, lesion_statistics, quality_grade, quality_measures
from micropatch.data.datasets import load_records
from micropatch.data.preprocessing import component_areas_px, preprocess_record
from micropatch.data.synthetic import SyntheticSpec, synth_fundus, write_idrid_layout

# the default's size: the generator draws lesions in px, so only at a realistic size are they realistic shares
# of the FOV (README, "Characterisation")
DEFAULT_SIZE = SyntheticSpec()


@pytest.fixture(scope="module")
def styled_sets(tmp_path_factory) -> dict[str, list[dict]]:
    """Fingerprints of three 10-image sets with the same photographs, labelled fine, coarse and mixed."""
    out = {}
    for style in ("fine", "coarse", "mixed"):
        root = tmp_path_factory.mktemp(style)
        write_idrid_layout(root, 10, seed=11, spec=replace(DEFAULT_SIZE, label_style=style))
        out[style] = [preprocess_record(r, root / "pre", ["MA", "HE", "EX", "SE"], 2.0, 8, 15)
                      for r in load_records("idrid", root, style)]
    return out


def test_the_three_labelling_styles_are_told_apart(styled_sets):
    styles = {style: labelling_style(fps) for style, fps in styled_sets.items()}
    assert {style: s["style"] for style, s in styles.items()} == {"fine": "fine", "coarse": "coarse",
                                                                  "mixed": "mixed"}
    assert styles["fine"]["coarse_share"] == 0 and styles["coarse"]["coarse_share"] == 1
    # the same photographs underneath: only the labels differ
    assert [fp["sha256"] for fp in styled_sets["fine"]] == [fp["sha256"] for fp in styled_sets["coarse"]]


def test_coarse_labels_cover_the_exact_lesions_with_fewer_larger_components():
    spec = replace(DEFAULT_SIZE, label_style="fine")
    rgb, fine = synth_fundus(3, spec)
    rgb_coarse, coarse = synth_fundus(3, replace(spec, label_style="coarse"))
    assert np.array_equal(rgb, rgb_coarse)
    assert (coarse["MA"] | fine["MA"]).sum() == coarse["MA"].sum()  # every exact lesion pixel stays labelled
    assert len(component_areas_px(coarse["MA"])) < len(component_areas_px(fine["MA"]))
    assert coarse["MA"].sum() > 3 * fine["MA"].sum()


def test_lesion_statistics_are_shares_of_the_fov_and_skip_unannotated_lesions():
    fp = {"fov_fraction": 0.5, "height": 1000, "width": 2000, "component_areas": {"MA": [10, 30], "HE": [1000],
                                                                                  "EX": []},
          "annotated": {"MA": True, "HE": False, "EX": True}}
    stats = lesion_statistics(fp)
    assert stats == {"MA": {"count": 2, "mean_area_ppm": 20.0}, "all": {"count": 2, "mean_area_ppm": 20.0}}
    assert labelling_style([fp])["style"] == "fine"
    assert labelling_style([{**fp, "component_areas": {"MA": [], "EX": []}}])["style"] == "unlabelled"


def test_quality_grade_drops_with_blur_and_darkness():
    rgb = synth_fundus(5, DEFAULT_SIZE)[0]
    sharp = quality_measures(rgb, 15)
    blurred = quality_measures(cv2.GaussianBlur(rgb, (0, 0), 4), 15)
    dark = quality_measures((rgb * 0.15).astype(np.uint8), 15)  # a flash that did not fire
    shadowed = rgb.copy()  # half the field in shadow, as an eyelash or a small pupil leaves it
    shadowed[:, :rgb.shape[1] // 2] = (shadowed[:, :rgb.shape[1] // 2] * 0.25).astype(np.uint8)
    assert quality_grade(sharp) == "Good"
    assert blurred["focus"] < 0.5 * sharp["focus"] and quality_grade(blurred) != "Good"
    assert quality_grade(dark) == "Reject"
    uneven = quality_measures(shadowed, 15)
    assert uneven["evenness"] < 0.6 * sharp["evenness"] and quality_grade(uneven) != "Good"
