import numpy as np

from micropatch.split import assign_splits, choose_val_groups, manifest_csv


def random_phash(seed):
    return "".join(np.random.default_rng(seed).choice(list("0123456789abcdef"), 64))


def fingerprint(i, patient=None, dataset="idrid", lesion=1, split="train"):
    return {"dataset": dataset, "image_id": f"IDRiD_{i:02d}", "patient_key": patient or f"IDRiD_{i:02d}",
            "official_split": split, "sha256": f"{i:064x}", "phash": random_phash(i), "height": 10, "width": 10,
            "source": f"x/{i}.jpg", "lesion_pixels": {"MA": lesion}}


def test_idrid_54_gives_43_train_11_val():
    rows = assign_splits([fingerprint(i) for i in range(1, 55)], ["idrid"], 0.2037, 42)
    assert sum(r["split"] == "val" for r in rows) == 11
    assert sum(r["split"] == "train" for r in rows) == 43


def test_no_patient_on_both_sides():
    fps = [fingerprint(i, patient=f"P{i // 3}") for i in range(60)]
    rows = assign_splits(fps, ["idrid"], 0.25, 0)
    sides = {}
    for r in rows:
        sides.setdefault(r["patient_key"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values())
    assert {"train", "val"} == {s for v in sides.values() for s in v}


def test_user_patient_keys_override_the_adapter():
    fps = [fingerprint(i) for i in range(20)]
    keys = {f"IDRiD_{i:02d}": "same-eye" for i in range(10)}
    rows = assign_splits(fps, ["idrid"], 0.3, 1, keys)
    assert len({r["split"] for r in rows if r["patient_key"] == "same-eye"}) == 1


def test_stratified_both_sides_get_lesion_bearing_images():
    groups = [f"g{i}" for i in range(10)]
    positive = {"g0", "g1"}
    for seed in range(20):
        val = choose_val_groups(groups, positive, 0.2, seed)
        assert len(val & positive) == 1


def test_official_test_and_other_datasets_are_test():
    fps = [fingerprint(1), fingerprint(2), fingerprint(3, split="test"), fingerprint(4, dataset="ddr")]
    rows = {(r["dataset"], r["image_id"]): r["split"] for r in assign_splits(fps, ["idrid"], 0.5, 0)}
    assert rows[("idrid", "IDRiD_03")] == "test" and rows[("ddr", "IDRiD_04")] == "test"


def test_manifest_is_deterministic_and_seed_dependent():
    fps = [fingerprint(i) for i in range(30)]
    a = manifest_csv(assign_splits(fps, ["idrid"], 0.2, 3))
    assert a == manifest_csv(assign_splits(list(reversed(fps)), ["idrid"], 0.2, 3))
    assert a != manifest_csv(assign_splits(fps, ["idrid"], 0.2, 4))
