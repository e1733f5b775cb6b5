import shutil

import pytest
from PIL import Image

from micropatch.core.fileio import InputError
from micropatch.data.datasets import load_records


def test_reads_synthetic_official_layout_from_either_root(synthetic_idrid):
    for root in (synthetic_idrid, synthetic_idrid / "A. Segmentation"):
        records = load_records("idrid", root, "idrid")
        assert [r.image_id for r in records] == ["IDRiD_01", "IDRiD_02", "IDRiD_03", "IDRiD_04"]
        assert all(r.masks["MA"] is not None and r.masks["EX"] is not None for r in records)
        assert all(r.patient_key == r.image_id and r.official_split == "train" for r in records)


def test_missing_required_mask_and_broken_root_are_named(synthetic_idrid, tmp_path):
    copy = tmp_path / "idrid"
    shutil.copytree(synthetic_idrid, copy)
    ma = next((copy / "A. Segmentation" / "2. All Segmentation Groundtruths").rglob("IDRiD_02_MA.tif"))
    ma.unlink()
    with pytest.raises(InputError, match="IDRiD_02_MA.tif: missing MA mask"):
        load_records("idrid", copy, "idrid")
    with pytest.raises(InputError, match="is no IDRiD root"):
        load_records("idrid", tmp_path, "idrid")
    with pytest.raises(InputError, match="unknown dataset adapter"):
        load_records("kaggle", copy, "x")


def test_real_idrid_training_set(idrid):
    records = load_records("idrid", idrid, "idrid")
    assert len(records) == 54
    present = {lesion: sum(r.masks[lesion] is not None for r in records) for lesion in ("MA", "HE", "EX", "SE")}
    assert present == {"MA": 54, "HE": 53, "EX": 54, "SE": 26}
    assert next(r for r in records if r.image_id == "IDRiD_43").masks["HE"] is None
    for r in records:
        assert Image.open(r.image_path).size == (4288, 2848)
        for mask in r.masks.values():
            if mask is not None:
                assert Image.open(mask).size == (4288, 2848)
