import numpy as np

from micropatch.data.manifest import manifest_csv
from micropatch.data.split import assign_splits, choose_val_groups


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


def test_patient_split_stage_refuses_a_test_domain_without_images(tmp_path):
    """A held-out test domain that test_fraction leaves empty stops the patient-split stage, naming the domain and
    the param, and writes no manifest; infer would otherwise find it only after training."""
    import json
    import subprocess
    import sys

    import yaml
    from helpers.workspace import REPO

    images = [fingerprint(i, dataset="a", lesion=i % 2) for i in range(10)]
    images += [fingerprint(i, patient="b", dataset="b") for i in (10, 11)]  # one patient, two images
    for dataset in ("a", "b"):
        folder = tmp_path / "pre" / dataset
        folder.mkdir(parents=True)
        (folder / "fingerprint.json").write_text(json.dumps(
            {"dataset": dataset, "images": [x for x in images if x["dataset"] == dataset]}))
    params = {"lesions": ["MA"], "audit": {"phash_threshold": 0},
              "split": {"val_fraction": 0.2, "seed": 42, "patient_keys": None, "merge_near_duplicates": False,
                        "tune_fraction": 0.0, "test_fraction": 0.1},
              "roles": {"train_on": ["a"], "test_on": {"a_test": {"dataset": "a", "split": "held_out"},
                                                       "b_test": {"dataset": "b", "split": "held_out"}}}}

    def stage(test_fraction: float) -> subprocess.CompletedProcess:
        params["split"]["test_fraction"] = test_fraction
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        return subprocess.run([sys.executable, str(REPO / "stages" / "patient_split.py"), "--preprocessed", "pre",
                               "--out", "manifest.csv"], cwd=tmp_path, capture_output=True, text=True)

    refused = stage(0.1)  # b: 1 patient, round(0.1) = 0 held out
    assert refused.returncode != 0 and not (tmp_path / "manifest.csv").exists()
    assert "roles.test_on.b_test" in refused.stderr and "split.test_fraction 0.1" in refused.stderr
    accepted = stage(0.6)  # b's one patient held out, and a's 6 of 10
    assert accepted.returncode == 0, accepted.stderr
    assert "held_out" in (tmp_path / "manifest.csv").read_text()
