"""The real dvc.yaml on a tiny synthetic set: every stage runs, the model learns, a second repro is a no-op."""
import json
import sys

import pytest

from conftest import dvc_workspace, run

pytestmark = pytest.mark.slow


def small(params: dict) -> None:
    params["synthetic"].update(n_images=8, width=512, height=340, seed=3)
    for entry in params["download"]["datasets"][1:]:  # the zero-shot stand-ins (DDR and e-ophtha layouts)
        entry["synthetic"].update(width=384, height=256)
    params["split"]["val_fraction"] = 0.25
    params["train"].update(epochs=3, early_stopping_patience=3)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    env = dvc_workspace(work, small)
    run([sys.executable, "-m", "micropatch.cli", "synth"], work, env)
    first = run(["dvc", "repro"], work, env)
    return work, env, first


def test_every_stage_runs_and_writes_its_outputs(workspace):
    work, _, log = workspace
    for stage in ("download", "preprocess", "patient-split", "patchify", "train", "infer@synthetic_val",
                  "infer@ddr_test", "infer@eophtha", "score"):
        assert f"Running stage '{stage}'" in log
    manifest = (work / "data/splits/manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 8 + 6 + 9 and sum(",val," in line for line in manifest) == 2
    patches = json.loads((work / "data/patches/train/meta.json").read_text())
    assert patches["patches"] > patches["lesion_patches"] > 0
    assert len(list((work / "data/predictions/synthetic_val").glob("*_MA.png"))) == 2
    assert len(list((work / "data/predictions/ddr_test").glob("*_MA.png"))) == 2  # DDR's official test split


def test_cross_domain_table_and_dataset_summary(workspace):
    work, _, _ = workspace
    rows = json.loads((work / "metrics/cross_domain.json").read_text())
    assert [(r["domain"], r["zero_shot"]) for r in rows] == [("ddr_test", True), ("eophtha", True),
                                                             ("synthetic_val", False)]
    resolution = {r["domain"]: r["resolution"] for r in rows}
    assert resolution["synthetic_val"] == "512x340" and resolution["eophtha"] == "384x256"
    eophtha = json.loads((work / "metrics/domains/eophtha.json").read_text())
    assert eophtha["lesions"]["MA"]["n_images"] == 9  # healthy images are scored too (empty truth)
    datasets = json.loads((work / "metrics/datasets.json").read_text())
    assert datasets["synthetic"]["median_resolution"] == "512x340"
    assert datasets["eophtha"]["patients"] == 3 and datasets["eophtha"]["lesions"]["MA"]["images_with_lesion"] == 6
    assert "| eophtha | MA | yes | 9 | 384x256 |" in (work / "metrics/cross_domain.md").read_text()


def test_trained_model_beats_a_trivial_predictor(workspace):
    work, _, _ = workspace
    ma = json.loads((work / "metrics/domains/synthetic_val.json").read_text())["lesions"]["MA"]
    # an all-background predictor scores Dice 0; the synthetic dots are learnable
    assert ma["dice"] > 0.3, ma
    assert 0 < ma["aupr_11"] <= 1 and 0 < ma["ap"] <= 1


def test_second_repro_runs_nothing(workspace):
    work, env, _ = workspace
    log = run(["dvc", "repro"], work, env)
    assert "Running stage" not in log and "Data and pipelines are up to date" in log


def test_forced_rerun_reproduces_every_output_byte_for_byte(workspace):
    """dvc.lock holds the md5 of every output (manifest, patches, model, predictions, metrics): it must not move."""
    work, env, _ = workspace
    before = (work / "dvc.lock").read_text()
    run(["dvc", "repro", "--force"], work, env)
    assert (work / "dvc.lock").read_text() == before
