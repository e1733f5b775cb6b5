"""Masks as the official releases ship them: one test per adapter for its known quirk, and the label-map rule.

The rule (micropatch.core.fileio.read_mask): a mask is a label map when values other than its 3 most frequent ones
cover at most 1 % of its lesion pixels; those stray pixels count as lesion (non-zero) and are reported as a note.
"""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from micropatch.cli import main as cli
from micropatch.core.fileio import MAX_STRAY_FRACTION, InputError, label_map_stray, read_mask
from micropatch.data.datasets import load_records
from micropatch.data.preprocessing import preprocess_record
from micropatch.data.synthetic import (
    EOPHTHA_MASK_STYLES,
    IDRID_LESION_FOLDERS,
    SyntheticSpec,
    synth_fundus,
    write_ddr_layout,
    write_eophtha_layout,
    write_idrid_layout,
)

SMALL = SyntheticSpec(width=320, height=224, ma_diameter_px=(3, 8))


@pytest.fixture(scope="module")
def eophtha(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eophtha")
    write_eophtha_layout(root, 12, seed=4, spec=SMALL)  # 8 annotated images: the 4 value sets twice
    return root


def annotation_values(root: Path) -> list[tuple[int, ...]]:
    return [tuple(np.unique(np.asarray(Image.open(p))).tolist())
            for p in sorted((root / "e_optha_MA" / "Annotation_MA").rglob("*.png"))]


def test_eophtha_fixture_holds_the_four_value_sets_of_the_release(eophtha):
    values = annotation_values(eophtha)
    assert {v for v in values} == {(0, 200, 255), (0, 255), (0, 200), (0, 200, 239, 247, 255)}
    assert len(EOPHTHA_MASK_STYLES) == 4


def test_datasets_inspect_accepts_the_release_value_sets_with_a_note_for_strays(eophtha, capsys):
    assert cli(["datasets", "inspect", "eophtha", str(eophtha)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["problems"] == []
    stray = [n for n in report["notes"] if "stray pixels" in n]
    assert len(stray) == 2 and all("of 239" in n and "of 247" in n for n in stray)  # counts of the odd values


def test_stray_pixels_are_lesion(eophtha, tmp_path):
    """E0008389/C0000887.png's quirk: 239 and 247 inside lesions are lesion, like 200 and 255."""
    record = next(r for r in load_records("eophtha", eophtha, "eophtha")
                  if r.masks.get("MA") and 239 in np.asarray(Image.open(r.masks["MA"])))
    values = np.asarray(Image.open(record.masks["MA"]))
    fp = preprocess_record(record, tmp_path, ["MA"], 2.0, 8, 15)
    assert fp["lesion_pixels"]["MA"] == int((values > 0).sum())


def damaged_copies(mask: np.ndarray) -> dict[str, np.ndarray]:
    """A binary mask as a careless export leaves it: JPEG-saved (q95), resampled, and grayscale noise."""
    values = mask.astype(np.uint8) * 255
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, format="JPEG", quality=95)
    height, width = values.shape
    resampled = np.asarray(Image.fromarray(values).resize((width * 3 // 4, height * 3 // 4), Image.BILINEAR)
                           .resize((width, height), Image.BILINEAR))
    noise = np.random.default_rng(0).integers(0, 256, values.shape, dtype=np.uint8)
    return {"jpeg": np.asarray(Image.open(buf)), "resampled": resampled, "noise": noise}


@pytest.mark.parametrize("damage", ["jpeg", "resampled", "noise"])
def test_inspect_still_refuses_jpeg_resampled_and_noise_masks(eophtha, tmp_path, damage, capsys):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(eophtha, root)
    target = sorted((root / "e_optha_MA" / "Annotation_MA").rglob("*.png"))[0]
    Image.fromarray(damaged_copies(np.asarray(Image.open(target)) > 0)[damage]).save(target)
    assert cli(["datasets", "inspect", "eophtha", str(root)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert any(target.name in p and "not a label map" in p for p in report["problems"])


def test_the_rule_sits_between_the_release_and_damaged_masks():
    """The stray share of the release's quirk is under the limit; JPEG and resampling put masks over it."""
    _, masks = synth_fundus(5, SyntheticSpec())
    damaged = damaged_copies(masks["MA"])
    for name in ("jpeg", "resampled"):
        assert label_map_stray(damaged[name])[1] > MAX_STRAY_FRACTION, name
    real_quirk = 4 / (318 + 208 + 4)  # C0000887.png: 4 stray pixels beside 318 of 255 and 208 of 200
    assert real_quirk < MAX_STRAY_FRACTION


def test_idrid_rgba_ex_mask_of_the_test_half_reads_red_as_lesion(tmp_path):
    """IDRiD_81_EX.tif, in the official test half, is an RGBA TIFF with alpha 255: red > 0 is the lesion."""
    write_idrid_layout(tmp_path, 1, seed=9, spec=SMALL, first_id=81, split_folder="b. Testing Set")
    path = (tmp_path / "A. Segmentation" / "2. All Segmentation Groundtruths" / "b. Testing Set" /
            IDRID_LESION_FOLDERS["EX"] / "IDRiD_81_EX.tif")
    lesion = np.asarray(Image.open(path).convert("L")) > 0
    rgba = np.zeros((*lesion.shape, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[lesion, 0] = 255
    rgba[lesion, 1] = 60  # the other channels carry colour, not the label
    Image.fromarray(rgba, "RGBA").save(path)
    record = next(r for r in load_records("idrid", tmp_path, "idrid") if r.image_id == "IDRiD_81")
    assert record.official_split == "test"
    assert (read_mask(record.masks["EX"]) == lesion).all() and lesion.any()


def test_ddr_empty_label_files_are_no_lesion_not_an_error(tmp_path, capsys):
    write_ddr_layout(tmp_path, 4, seed=3, spec=SMALL)  # the 4th image is lesion-free: four all-zero TIFFs
    assert cli(["datasets", "inspect", "ddr", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and all(report["empty_masks"][lesion] >= 1 for lesion in ("MA", "HE", "EX", "SE"))
    empty = next(r for r in load_records("ddr", tmp_path, "ddr") if r.image_id == "010-1882-103")
    assert not read_mask(empty.masks["MA"]).any()


def test_mask_values_outside_the_rule_name_the_file_and_the_fix(tmp_path):
    values = np.zeros((40, 40), np.uint8)
    values[10:20, 10:20] = 255
    values[10:20, 10] = np.arange(10) + 100  # ten levels once each: one counts as a level, 9 % are strays
    path = tmp_path / "edge.png"
    Image.fromarray(values).save(path)
    with pytest.raises(InputError, match=r"edge\.png: not a label map: 9\.0% .*original lossless file"):
        read_mask(path)
