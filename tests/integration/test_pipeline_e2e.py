"""The real dvc.yaml on a tiny synthetic set: every stage runs, the model learns, a second repro is a no-op,
branches compare with `dvc metrics diff`, and a killed training resumes through `dvc repro` to the same bytes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers.training_state import saved_epoch
from helpers.workspace import dvc_workspace, run

from micropatch.evaluation.score import HEADLINE_KEYS

pytestmark = pytest.mark.slow


def small(params: dict) -> None:
    params["synthetic"]["synthetic"].update(n_images=8, width=512, height=340, seed=3)
    for stand_in in ("ddr", "eophtha"):  # the zero-shot stand-ins (DDR and e-ophtha layouts)
        params["synthetic"][stand_in].update(width=384, height=256)
    params["split"]["val_fraction"] = 0.25
    # 2 epochs of 11 steps of 8 patches (the 11 steps of 16 that the default's batch makes of the 176 training
    # patches, at half the batch): the dots are learnt by the second; training in the reproducible mode is most of
    # this module's time (the setup builds it, the resume test builds it again), and half batches halve it
    params["train"].update(epochs=2, early_stopping_patience=2, batch_size=8, max_steps_per_epoch=11)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    env = dvc_workspace(work, small)
    run([sys.executable, "-m", "micropatch.cli", "synth", "--out", "data/sources"], work, env)
    first = run(["dvc", "repro"], work, env)
    return work, env, first


def test_every_stage_runs_and_writes_its_outputs(workspace):
    work, _, log = workspace
    for stage in ("download", "preprocess", "patient-split", "patchify", "train", "infer@synthetic_val",
                  "infer@ddr_test", "infer@eophtha", "score"):
        assert f"Running stage '{stage}'" in log
    manifest = (work / "data/splits/manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 8 + 6 + 9 + 8 + 8 and sum(",val," in line for line in manifest) == 2
    patches = json.loads((work / "data/patches/train/meta.json").read_text())
    assert patches["patches"] > patches["lesion_patches"] > 0
    assert len(list((work / "data/predictions/synthetic_val").glob("*_MA.png"))) == 2
    assert len(list((work / "data/predictions/ddr_test").glob("*_MA.png"))) == 2  # DDR's official test split


def test_cross_domain_table_and_dataset_summary(workspace):
    work, _, _ = workspace
    rows = json.loads((work / "metrics/cross_domain.json").read_text())
    assert [(r["domain"], r["zero_shot"]) for r in rows] == [("synthetic_val", False), ("ddr_test", True),
                                                             ("eophtha", True)]  # roles.test_on's order
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


def test_audit_stage_checked_every_image_and_patch(workspace):
    work, _, _ = workspace
    leakage = json.loads((work / "metrics/leakage.json").read_text())
    patches = sum(json.loads((work / f"data/patches/{s}/meta.json").read_text())["patches"] for s in ("train", "val"))
    assert leakage["images"] == 8 + 6 + 9 + 8 + 8 and leakage["patches_checked"] == patches > 0  # with the two
    assert leakage["image_pairs_checked"] == 39 * 38 // 2 and leakage["total_leaks"] == 0  # labelling-style sets
    assert "CLEAN: no leak found." in (work / "metrics/leakage_report.md").read_text()


def test_average_precision_ranks_the_synthetic_dots(workspace):
    """AP over 256 levels has no saturation artefact (README): a model that learned the dots ranks them well."""
    work, _, _ = workspace
    ma = json.loads((work / "metrics/domains/synthetic_val.json").read_text())["lesions"]["MA"]
    assert ma["ap"] > 0.3, ma  # an all-background predictor has AP = lesion prevalence (about 0.002)


def test_predict_gives_the_infer_stage_maps_byte_for_byte(workspace, tmp_path):
    """The same photograph through `micropatch predict` on the pipeline's runtime and mode (recipe from the model
    file) and through the pipeline."""
    work, env, _ = workspace
    rows = [r.split(",") for r in (work / "data/splits/manifest.csv").read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    val = next(dict(zip(header, r)) for r in rows if dict(zip(header, r))["split"] == "val")
    run(["micropatch", "predict", val["source"], "--model", "data/model/release.safetensors", "--out", str(tmp_path),
         "--compute", "reproducible", "--mode", "paper"],
        work, env)
    predicted = (tmp_path / f"{Path(val['source']).stem}_MA_probability.png").read_bytes()
    assert predicted == (work / f"data/predictions/synthetic_val/{val['image_id']}_MA.png").read_bytes()


def commit(work, env, message: str) -> None:
    run(["git", "add", "-A"], work, env)
    run(["git", "commit", "-q", "-m", message], work, env)


def test_revisions_compare_with_metrics_params_diff_and_exp_show(workspace):
    """What a user does to compare two commits: tables with the changed values, and no 'failed to load'."""
    work, env, _ = workspace
    commit(work, env, "baseline")
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["score"]["threshold"] = 0.3
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = run(["dvc", "repro"], work, env)
    assert "Running stage 'score'" in log and "Running stage 'train'" not in log
    commit(work, env, "threshold 0.3")
    for command in (["dvc", "metrics", "diff", "HEAD~1", "HEAD"], ["dvc", "params", "diff", "HEAD~1", "HEAD"]):
        out = run(command, work, env)
        assert "failed to load" not in out.lower() and "error" not in out.lower(), (command, out)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], work, env))
    assert shown and all(entry.get("error") is None and entry["data"].get("error") is None for entry in shown), shown
    assert shown[0]["data"]["params"]["params.yaml"]["data"]["score"]["threshold"] == 0.3
    params_diff = run(["dvc", "params", "diff", "HEAD~1", "HEAD", "--json"], work, env)
    threshold = json.loads(params_diff)["params.yaml"]["score.threshold"]
    assert (threshold["old"], threshold["new"]) == ("model", 0.3)  # the model's own point was 0.5 (no tune split)
    metrics_diff = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json"], work, env))
    changed = metrics_diff["metrics/headline/synthetic_val_MA.json"]  # what `dvc metrics` shows: the headline
    assert changed["dice"]["old"] != changed["dice"]["new"] and set(changed) <= set(HEADLINE_KEYS)


def test_editing_a_module_makes_exactly_its_stages_stale(workspace):
    """evaluation/figures.py is imported by score only; evaluation/metrics.py by train (patch Dice), infer and score:
    dvc status must say so."""
    work, env, _ = workspace
    for module, stale, fresh in (("figures.py", {"score"}, {"train", "patchify"}),
                                 ("metrics.py", {"train", "operating-point", "score"}, {"patchify", "preprocess"})):
        path = work / "src" / "micropatch" / "evaluation" / module
        original = path.read_text()
        path.write_text(original + "\n# an edit\n")
        try:
            status = json.loads(run(["dvc", "status", "--json"], work, env))
        finally:
            path.write_text(original)
        assert stale <= set(status) and not fresh & set(status), (module, sorted(status))
    assert json.loads(run(["dvc", "status", "--json"], work, env)) == {}


def model_md5(work) -> str:
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"].endswith(".safetensors"))


def test_killed_training_resumes_through_dvc_to_the_same_weights(workspace):
    """SIGKILL `dvc repro` once the state of epoch 1 is saved and resume it through `dvc repro`; DVC deleted the
    model before running the stage; the resumed run must end with the uninterrupted run's bytes. (A resumed run
    killed again, on its own state: test_interruption, without DVC's minutes.)"""

    work, env, _ = workspace
    uninterrupted = model_md5(work)
    state = work / "data/train_state/last.pt"
    child = subprocess.Popen(["dvc", "repro", "--force", "--single-item", "train"], cwd=work, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and child.poll() is None:
        if saved_epoch(state) >= 1:
            break
        time.sleep(0.2)
    assert child.poll() is None, "training finished before it could be killed after epoch 1"
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    # DVC removed the model before running the stage; a kill that lands after the model was written leaves one,
    # so delete it as DVC does: the rerun must rebuild it from the resume state alone
    (work / "data/model/model.safetensors").unlink(missing_ok=True)
    log = run(["dvc", "repro", "train"], work, env)
    assert "Running stage 'train'" in log
    assert model_md5(work) == uninterrupted and not state.exists()
