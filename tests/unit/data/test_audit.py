"""Each planted leak is caught with both files named; distinct images are not flagged; splits stay clean."""
import itertools

import pytest
from PIL import Image

from micropatch.core.fileio import read_fundus, sha256_file
from micropatch.data.audit import audit_manifest, audit_patches, run_audit
from micropatch.data.duplicates import PHASH_THRESHOLD, hamming_matrix, phash_bits
from micropatch.data.manifest import write_manifest
from micropatch.data.preprocessing import fov_mask, fov_phash, green_clahe
from micropatch.data.split import assign_splits
from micropatch.data.synthetic import SyntheticSpec, synth_fundus


@pytest.fixture(scope="module")
def eyes(tmp_path_factory):
    """Six synthetic fundus JPEGs (640x424) and their manifest fingerprints."""
    folder = tmp_path_factory.mktemp("eyes")
    fps = []
    for i in range(6):
        rgb, _ = synth_fundus(100 + i, SyntheticSpec(width=640, height=424))
        path = folder / f"eye{i}.jpg"
        Image.fromarray(rgb).save(path, quality=92)
        fps.append(fingerprint(path, f"eye{i}", f"P{i}"))
    return folder, fps


def pipeline_phash(path) -> str:
    """The phash the preprocess stage writes for a photograph: of its CLAHE green channel inside the FOV."""
    rgb = read_fundus(path)
    return fov_phash(green_clahe(rgb), fov_mask(rgb))


def fingerprint(path, image_id, patient):
    return {"dataset": "idrid", "image_id": image_id, "patient_key": patient, "official_split": "train",
            "sha256": sha256_file(path), "phash": pipeline_phash(path), "height": 424, "width": 640,
            "source": str(path), "lesion_pixels": {"MA": 1}}


def split(fps, seed=0, merge=False):
    return assign_splits(fps, ["idrid"], 0.5, seed, merge_near_duplicates=merge)


def val_and_train(rows):
    return next(r for r in rows if r["split"] == "val"), next(r for r in rows if r["split"] == "train")


def test_clean_split_has_no_leak(eyes):
    _, fps = eyes
    assert audit_manifest(split(fps)) == []


def test_same_patient_on_both_sides_is_caught(eyes):
    _, fps = eyes
    rows = split(fps)
    val, train = val_and_train(rows)
    val["patient_key"] = train["patient_key"]
    leaks = audit_manifest(rows)
    assert [leak.kind for leak in leaks] == ["patient_key_in_two_splits"]
    assert {val["source"], train["source"]} <= set(" ".join([leaks[0].first, leaks[0].second]).split())


def test_byte_copy_under_a_new_name_is_caught(eyes, tmp_path):
    _, fps = eyes
    rows = split(fps)
    val, train = val_and_train(rows)
    copy = tmp_path / "renamed.jpg"
    copy.write_bytes(open(train["source"], "rb").read())
    rows.append(dict(fingerprint(copy, "renamed", "P99"), split="val", lesion_bearing=1))
    kinds = {leak.kind: leak for leak in audit_manifest(rows)}
    assert set(kinds) == {"identical_bytes_in_two_splits"}
    leak = kinds["identical_bytes_in_two_splits"]
    assert str(copy) in leak.first + leak.second and train["source"] in leak.first + leak.second


def test_reencoded_rescaled_cropped_copy_is_caught(eyes, tmp_path):
    _, fps = eyes
    rows = split(fps)
    val, train = val_and_train(rows)
    image = Image.open(train["source"])
    w, h = image.size
    image = image.resize((round(w * 0.95), round(h * 0.95)), Image.BILINEAR)
    image = image.crop((8, 6, image.width - 8, image.height - 6))
    copy = tmp_path / "edited.jpg"
    image.save(copy, quality=70)
    rows.append(dict(fingerprint(copy, "edited", "P77"), split="val", lesion_bearing=1))
    leaks = audit_manifest(rows)
    assert [leak.kind for leak in leaks] == ["near_duplicates_in_two_splits"]
    assert str(copy) in leaks[0].first + leaks[0].second and train["source"] in leaks[0].first + leaks[0].second


def test_merge_option_keeps_unlabelled_duplicates_on_one_side(eyes, tmp_path):
    _, fps = eyes
    copies = []
    for n, fp in enumerate(fps):
        copy = tmp_path / f"dup{n}.jpg"
        Image.open(fp["source"]).save(copy, quality=70)
        copies.append(fingerprint(copy, f"dup{n}", f"Q{n}"))
    assert any(audit_manifest(split(fps + copies, seed)) for seed in range(5))  # unmerged: some seed leaks
    for seed in range(5):
        assert audit_manifest(split(fps + copies, seed, merge=True)) == []


def test_distinct_images_of_the_synthetic_default_are_never_flagged():
    spec = SyntheticSpec()  # the default size and generator of params.yaml
    hashes = []
    for seed in range(14):
        rgb, _ = synth_fundus(seed, spec)
        hashes.append(fov_phash(green_clahe(rgb), fov_mask(rgb)))
    distance = hamming_matrix(phash_bits(hashes))
    pairs = [distance[i, j] for i, j in itertools.combinations(range(14), 2)]
    assert min(pairs) > PHASH_THRESHOLD


def test_another_seed_gives_another_clean_split(eyes):
    _, fps = eyes
    a, b = split(fps, seed=1), split(fps, seed=2)
    assert [r["split"] for r in a] != [r["split"] for r in b]
    assert audit_manifest(a) == [] and audit_manifest(b) == []


def test_val_patch_moved_into_the_train_set_is_caught(eyes, tmp_path):
    _, fps = eyes
    rows = split(fps)
    val, train = val_and_train(rows)
    patch_sets = {"train": [{"dataset": "idrid", "image_id": train["image_id"], "y": 0, "x": 0}],
                  "val": [{"dataset": "idrid", "image_id": val["image_id"], "y": 64, "x": 64}]}
    assert audit_patches(rows, patch_sets) == []
    patch_sets["train"].append(patch_sets["val"].pop())
    leaks = audit_patches(rows, patch_sets)
    assert [leak.kind for leak in leaks] == ["eval_images_in_train_patches"]
    assert val["image_id"] in leaks[0].first and val["source"] in leaks[0].second


def test_audit_command_writes_zero_counts_or_exits_nonzero(eyes, tmp_path):
    _, fps = eyes
    rows = split(fps)
    write_manifest(tmp_path / "manifest.csv", rows)
    assert run_audit(str(tmp_path / "manifest.csv"), None, str(tmp_path / "clean"), PHASH_THRESHOLD) == 0
    import json

    counts = json.loads((tmp_path / "clean" / "leakage.json").read_text())
    assert counts["total_leaks"] == 0 and counts["images"] == 6
    val, train = val_and_train(rows)
    val["patient_key"] = train["patient_key"]
    write_manifest(tmp_path / "manifest.csv", rows)
    assert run_audit(str(tmp_path / "manifest.csv"), None, str(tmp_path / "leaky"), PHASH_THRESHOLD) == 1
    report = (tmp_path / "leaky" / "leakage_report.md").read_text()
    assert "LEAKS" in report and val["source"] in report and train["source"] in report
