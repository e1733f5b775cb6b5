"""The real dvc.yaml on a tiny synthetic set: every stage runs, the model learns, a second repro is a no-op."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow


def run(cmd, cwd, env):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    for name in ("dvc.yaml", "stages", "src"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, work / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synthetic"].update(n_images=8, width=512, height=340, seed=3)
    params["split"]["val_fraction"] = 0.25
    params["train"].update(epochs=3, early_stopping_patience=3)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    run(["git", "init", "-q"], work, env)
    run(["dvc", "init", "-q"], work, env)
    run([sys.executable, "-m", "micropatch.cli", "synth"], work, env)
    first = run(["dvc", "repro"], work, env)
    return work, env, first


def test_every_stage_runs_and_writes_its_outputs(workspace):
    work, _, log = workspace
    for stage in ("download", "preprocess", "patient-split", "patchify", "train", "infer@synthetic_val", "score"):
        assert f"Running stage '{stage}'" in log
    manifest = (work / "data/splits/manifest.csv").read_text().splitlines()
    assert len(manifest) == 9 and sum(",val," in line for line in manifest) == 2
    patches = json.loads((work / "data/patches/train/meta.json").read_text())
    assert patches["patches"] > patches["lesion_patches"] > 0
    assert len(list((work / "data/predictions/synthetic_val").glob("*_MA.png"))) == 2


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
