"""FGADR, MAPLES-DR and Retinal-Lesions adapters on fixtures written in their official layouts (SPEC.md section 1),
with the quirks of the releases: "Hemohedge", anti-aliased masks, missing IRMA files, 127-valued lesions, images
without masks, eye pairs, labels without photographs and MESSIDOR stems that do not match."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from micropatch.cli import main as cli
from micropatch.core.fileio import InputError, read_mask
from micropatch.data.audit import audit_manifest
from micropatch.data.datasets import ADAPTERS, load_records
from micropatch.data.preprocessing import preprocess_record
from micropatch.data.split import assign_splits
from micropatch.data.synthetic import LAYOUT_WRITERS, SyntheticSpec, synth_fundus

SMALL = SyntheticSpec(width=320, height=224, ma_diameter_px=(3, 8))


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, Path]:
    """One root per adapter, all six, written by the generator."""
    roots = {}
    for adapter in ADAPTERS:
        roots[adapter] = tmp_path_factory.mktemp(adapter)
        LAYOUT_WRITERS[adapter](roots[adapter], 8, 5, SMALL)
    return roots


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_datasets_inspect_reads_the_fixture_of_every_dataset(fixtures, adapter, capsys):
    assert cli(["datasets", "inspect", adapter, str(fixtures[adapter])]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["images"] == 8 and report["problems"] == []


def test_fgadr_reads_the_hemohedge_folder_and_no_irma_file_is_no_problem(fixtures):
    root = fixtures["fgadr"]
    records = load_records("fgadr", root, "fgadr")
    assert all("Hemohedge_Masks" in str(r.masks["HE"]) for r in records)
    assert len(list((root / "Seg-set" / "IRMA_Masks").iterdir())) < len(records)  # most images have none
    assert all(r.patient_key == r.image_id and r.official_split == "all" for r in records)


def test_fgadr_binarises_anti_aliased_masks_at_128(fixtures):
    record = load_records("fgadr", fixtures["fgadr"], "fgadr")[1]  # saved as RGB with equal channels
    rgb = np.asarray(Image.open(record.masks["MA"]))
    assert rgb.ndim == 3 and (rgb[..., 0] == rgb[..., 2]).all()
    values = rgb[..., 0]
    assert ((values > 0) & (values < 255)).sum() > 0.2 * (values == 255).sum()  # the edges: many levels
    drawn = synth_fundus(5 * 100_003 + 1, SyntheticSpec(width=224, height=224, ma_diameter_px=(3, 8)))[1]["MA"]
    read = read_mask(record.masks["MA"], drawn.shape, [], record.mask_level, record.antialiased)
    assert np.array_equal(read, values >= 128) and (values > 0).sum() > 1.3 * read.sum()  # the rim is not lesion
    assert (read & drawn).sum() >= 0.8 * (read | drawn).sum()  # the drawn shape, give or take its rim
    with pytest.raises(InputError, match="not a label map"):  # without the dataset's rule: refused
        read_mask(record.masks["MA"], drawn.shape)


def test_fgadr_missing_lesion_mask_names_the_file(fixtures, tmp_path):
    root = tmp_path / "fgadr"
    shutil.copytree(fixtures["fgadr"], root)
    (root / "Seg-set" / "SoftExudate_Masks" / "0003_3.png").unlink()
    with pytest.raises(InputError, match=r"SoftExudate_Masks/0003_3.png: missing SE mask"):
        load_records("fgadr", root, "fgadr")


def test_retinal_lesions_127_is_not_lesion_unless_asked(fixtures, tmp_path):
    root = fixtures["retinal_lesions"]
    default = {r.image_id: r for r in load_records("retinal_lesions", root, "rl")}
    uncertain = {r.image_id: r for r in load_records("retinal_lesions", root, "rl", uncertain_as_lesion=True)}
    path = next(p for p in sorted((root / "retinal-lesions-v20191227" / "lesion_segs_896x896").rglob("*.png"))
                if 127 in np.asarray(Image.open(p)))
    values = np.asarray(Image.open(path))
    record = default[path.parent.name]
    lesion = next(k for k, v in record.masks.items() if v == path)
    fp = preprocess_record(record, tmp_path / "a", [lesion], 2.0, 8, 15)
    assert fp["lesion_pixels"][lesion] == int((values == 255).sum())
    fp = preprocess_record(uncertain[path.parent.name], tmp_path / "b", [lesion], 2.0, 8, 15)
    assert fp["lesion_pixels"][lesion] == int((values > 0).sum())


def test_retinal_lesions_images_without_masks_are_lesion_free_and_eyes_share_a_patient(fixtures, tmp_path):
    records = load_records("retinal_lesions", fixtures["retinal_lesions"], "rl")
    bare = [r for r in records if not (r.image_path.parent.parent / "lesion_segs_896x896" / r.image_id).exists()]
    assert bare and all(set(r.masks) == {"MA", "HE", "EX", "SE"} and not any(r.masks.values()) for r in bare)
    fp = preprocess_record(bare[0], tmp_path, ["MA", "HE", "EX", "SE"], 2.0, 8, 15)
    assert fp["lesion_pixels"] == {"MA": 0, "HE": 0, "EX": 0, "SE": 0} and all(fp["annotated"].values())
    pairs = {}
    for r in records:
        pairs.setdefault(r.patient_key, set()).add(r.image_id.rsplit("_", 1)[1])
    assert len(pairs) == 4 and all(eyes == {"left", "right"} for eyes in pairs.values())
    fingerprints = [preprocess_record(r, tmp_path, ["MA"], 2.0, 8, 15) for r in records]
    patient_keys = {r.image_id: r.patient_key for r in records}
    for seed in range(6):  # both eyes of a patient land in one split, whatever the seed
        rows = assign_splits(fingerprints, ["rl"], 0.25, seed, patient_keys)
        splits_of = {}
        for row in rows:
            splits_of.setdefault(row["patient_key"], set()).add(row["split"])
        assert all(len(s) == 1 for s in splits_of.values()) and audit_manifest(rows) == []


def test_retinal_lesions_inspect_reports_the_896_resize(fixtures, capsys):
    assert cli(["datasets", "inspect", "retinal_lesions", str(fixtures["retinal_lesions"])]) == 0
    assert any("896x896" in note and "not native" in note for note in json.loads(capsys.readouterr().out)["notes"])


def test_maples_dr_takes_a_separate_messidor_root_and_reads_1_bit_masks(fixtures, tmp_path):
    labels, images = tmp_path / "MAPLES-DR", tmp_path / "messidor"
    shutil.copytree(fixtures["maples_dr"], labels, ignore=shutil.ignore_patterns("MESSIDOR"))
    shutil.copytree(fixtures["maples_dr"] / "MESSIDOR", images)
    with pytest.raises(InputError, match="option `images`"):
        load_records("maples_dr", labels, "maples")
    records = load_records("maples_dr", tmp_path, "maples", images=images)  # the folder above MAPLES-DR/ too
    assert len(records) == 8 and {r.official_split for r in records} == {"train", "test"}
    assert all(r.image_path.suffix == ".tif" and images in r.image_path.parents for r in records)
    assert Image.open(records[0].masks["MA"]).mode == "1"
    with pytest.raises(InputError, match="no option"):
        load_records("maples_dr", labels, "maples", image=images)


def test_maples_dr_reports_label_stems_without_a_messidor_photograph(fixtures, tmp_path, capsys):
    root = tmp_path / "maples"
    shutil.copytree(fixtures["maples_dr"], root)
    missing = next((root / "MESSIDOR").rglob("*.tif"))
    missing.unlink()
    with pytest.raises(InputError, match=f"1 MAPLES-DR label set.*{missing.stem}"):
        load_records("maples_dr", root, "maples")
    assert cli(["datasets", "inspect", "maples_dr", str(root), "--images", str(root / "MESSIDOR")]) == 1
    assert any(missing.stem in p for p in json.loads(capsys.readouterr().out)["problems"])


def test_an_adapter_option_it_does_not_have_is_refused(fixtures):
    with pytest.raises(InputError, match="no option"):
        load_records("idrid", fixtures["idrid"], "idrid", uncertain_as_lesion=True)
