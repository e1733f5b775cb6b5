"""DDR and e-ophtha adapters on fixtures in their official layouts; roots; patient isolation; datasets inspect."""
import json
from pathlib import Path

import numpy as np
import pytest

from micropatch.cli import main as cli
from micropatch.core.fileio import InputError
from micropatch.data.audit import audit_manifest
from micropatch.data.datasets import load_records
from micropatch.data.manifest import domain_rows
from micropatch.data.preprocessing import dataset_summary, preprocess_record
from micropatch.data.split import assign_splits
from micropatch.data.synthetic import SyntheticSpec, write_ddr_layout, write_eophtha_layout

SMALL = SyntheticSpec(width=320, height=224, ma_diameter_px=(3, 8))


@pytest.fixture(scope="module")
def ddr(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddr")
    write_ddr_layout(root, 8, seed=3, spec=SMALL)
    return root


@pytest.fixture(scope="module")
def eophtha(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eophtha")
    write_eophtha_layout(root, 12, seed=4, spec=SMALL)  # 4 patients of 3 images; the third is healthy
    return root


def test_ddr_reads_all_three_splits_and_its_sic_label_folder(ddr):
    records = load_records("ddr", ddr, "ddr")
    assert [r.official_split for r in records].count("train") == 3
    assert {r.official_split for r in records} == {"train", "valid", "test"}
    valid = next(r for r in records if r.official_split == "valid")
    assert "segmentation label" in str(valid.masks["MA"])
    assert all(set(r.masks) == {"MA", "HE", "EX", "SE"} and r.patient_key == r.image_id for r in records)


def test_ddr_empty_label_files_are_valid_no_lesion(ddr, tmp_path):
    lesion_free = next(r for r in load_records("ddr", ddr, "ddr") if r.image_id == "010-1882-103")  # every 4th
    fp = preprocess_record(lesion_free, tmp_path, ["MA", "HE", "EX", "SE"], 2.0, 8, 15)
    assert fp["lesion_pixels"] == {"MA": 0, "HE": 0, "EX": 0, "SE": 0}
    assert all(fp["annotated"].values())


@pytest.mark.parametrize("level", ["", "DDR-dataset", "DDR-dataset/lesion_segmentation"])
def test_ddr_root_may_be_any_of_three_levels(ddr, level, caplog):
    caplog.set_level("INFO")
    assert len(load_records("ddr", ddr / level, "ddr")) == 8
    assert "DDR root" in caplog.text and "found" in caplog.text


def test_eophtha_jpg_case_thumbs_db_healthy_and_patients(eophtha, caplog):
    records = load_records("eophtha", eophtha, "eophtha")
    assert len(records) == 12 and "Thumbs.db" not in caplog.text
    assert {r.image_path.suffix for r in records} == {".jpg", ".JPG"}
    healthy = [r for r in records if "healthy" in r.image_path.parts]
    assert len(healthy) == 3 and all(r.masks == {"MA": None} for r in healthy)
    with_ma = [r for r in records if r not in healthy]
    assert all(r.masks["MA"].suffix == ".png" and r.masks["MA"].stem == r.image_id for r in with_ma)
    assert len({r.patient_key for r in records}) == 4 and all(r.patient_key.startswith("E") for r in records)
    assert len(load_records("eophtha", eophtha / "e_optha_MA", "eophtha")) == 12  # top folder or its parent


def test_eophtha_annotation_values_200_and_255_are_both_lesion(eophtha, tmp_path):
    record = next(r for r in load_records("eophtha", eophtha, "eophtha") if r.masks["MA"] is not None)
    from PIL import Image

    values = set(np.unique(np.array(Image.open(record.masks["MA"]))))
    assert values == {0, 200, 255}
    fp = preprocess_record(record, tmp_path, ["MA"], 2.0, 8, 15)
    assert fp["lesion_pixels"]["MA"] == int((np.array(Image.open(record.masks["MA"])) > 0).sum())


def test_eophtha_images_of_one_patient_never_straddle_a_split(eophtha, tmp_path):
    records = load_records("eophtha", eophtha, "eophtha")
    fingerprints = [preprocess_record(r, tmp_path, ["MA"], 2.0, 8, 15) for r in records]
    for seed in range(10):
        rows = assign_splits(fingerprints, ["eophtha"], 0.25, seed)
        splits_of = {}
        for row in rows:
            splits_of.setdefault(row["patient_key"], set()).add(row["split"])
        assert all(len(s) == 1 for s in splits_of.values()), splits_of
        assert {"train", "val"} <= {row["split"] for row in rows}
        assert audit_manifest(rows) == []


def test_test_domains_select_by_split_and_refuse_training_images(ddr, tmp_path):
    fingerprints = [preprocess_record(r, tmp_path, ["MA"], 2.0, 8, 15) for r in load_records("ddr", ddr, "ddr")]
    zero_shot = assign_splits(fingerprints, ["idrid"], 0.2, 0)  # DDR not trained on: every image is 'test'
    assert len(domain_rows(zero_shot, "ddr_test", {"dataset": "ddr", "official_split": "test"})) == 2
    assert len(domain_rows(zero_shot, "ddr", {"dataset": "ddr"})) == 8
    trained = assign_splits(fingerprints, ["ddr"], 0.34, 0)
    with pytest.raises(InputError, match="training images"):
        domain_rows(trained, "ddr_all", {"dataset": "ddr"})
    with pytest.raises(InputError, match="no image of the manifest matches"):
        domain_rows(trained, "typo", {"dataset": "dddr", "split": "val"})


def test_dataset_summary_reports_resolutions_and_lesion_sizes(ddr, tmp_path):
    records = load_records("ddr", ddr, "ddr")
    summary = dataset_summary([preprocess_record(r, tmp_path, ["MA"], 2.0, 8, 15) for r in records])
    assert summary["resolutions"] == {"240x168": 4, "320x224": 4}
    ma = summary["lesions"]["MA"]
    assert ma["images_with_lesion"] == 6 and ma["annotated_images"] == 8  # images 4 and 8 are lesion-free
    assert 3 <= ma["area_px_p10"] <= ma["area_px_median"] <= ma["area_px_p90"] <= 80


def test_missing_mask_is_an_error_naming_the_file(eophtha, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(eophtha, copy)
    victim = sorted((copy / "e_optha_MA" / "Annotation_MA").rglob("*.png"))[0]
    victim.unlink()
    with pytest.raises(InputError, match=f"{victim}: missing MA annotation"):
        load_records("eophtha", copy, "eophtha")


def test_inspect_prints_counts_and_exits_zero_on_a_good_root(ddr, capsys):
    assert cli(["datasets", "inspect", "ddr", str(ddr)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 8 and report["patients"] == 8
    assert report["official_splits"] == {"test": 2, "train": 3, "valid": 3}
    assert report["resolutions"] == {"320x224": 4, "240x168": 4}
    assert report["masks"]["MA"] == 8 and report["empty_masks"]["MA"] == 2
    assert report["dataset_root"].endswith("DDR-dataset/lesion_segmentation") and report["problems"] == []


def test_inspect_lists_problems_and_exits_nonzero(eophtha, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(eophtha, copy)
    missing = sorted((copy / "e_optha_MA" / "Annotation_MA").rglob("*.png"))[0]
    missing.unlink()
    truncated = sorted((copy / "e_optha_MA" / "MA").rglob("*.[jJ][pP][gG]"))[-1]
    truncated.write_bytes(truncated.read_bytes()[:300])
    assert cli(["datasets", "inspect", "eophtha", str(copy)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 12 and report["absent_by_documentation"]["MA"] == 3
    assert report["not_annotated"]["HE"] == 12  # e-ophtha MA annotates MA only
    assert len(report["problems"]) == 2 and not report["ok"]
    assert any(str(missing) in p for p in report["problems"]) and any(str(truncated) in p for p in report["problems"])


def test_inspect_on_a_broken_root_exits_nonzero(tmp_path, capsys):
    assert cli(["datasets", "inspect", "ddr", str(tmp_path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert "is no DDR root" in report["problems"][0] and report["ok"] is False


def test_inspect_says_a_missing_root_does_not_exist_and_logs_the_found_root_once(synthetic_idrid, tmp_path, caplog):
    from micropatch.data.datasets.inspection import inspect_root

    missing = inspect_root("idrid", tmp_path / "nowhere")
    assert not missing["ok"] and missing["problems"] == [f"{tmp_path / 'nowhere'}: does not exist; check the path "
                                                         "to the IDRiD download"]
    caplog.set_level("INFO")
    assert inspect_root("idrid", synthetic_idrid)["ok"]
    assert sum("IDRiD root" in r.getMessage() for r in caplog.records) == 1


def test_label_levels_come_from_a_histogram_for_8_bit_masks_as_from_np_unique():
    from micropatch.core.fileio import label_map_stray

    rng = np.random.default_rng(0)
    mask = (rng.random((300, 400)) < 0.02).astype(np.uint8) * 255
    mask[:3, :3] = 7  # 9 stray pixels
    assert label_map_stray(mask) == label_map_stray(mask.astype(np.int32))
    assert label_map_stray(mask)[0] == [0, 7, 255]
