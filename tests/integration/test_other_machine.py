"""Play another machine: OpenCV's and numpy's optimised kernels switched off, one thread. From a copy of the
repository, `make data`'s restore must give the bytes data.dvc pins, and the stages up to patchify the bytes
dvc.lock pins. (Training and prediction are pinned by the compute mode: tests/test_compute.py.)"""
import os
import sys
from pathlib import Path

import pytest
import yaml
from helpers.workspace import REPO, run

from micropatch.project.pipeline import fresh_copy

pytestmark = pytest.mark.slow
PRE_TRAIN = ("download", "preprocess", "patient-split", "patchify")
SWITCHED_DOWN = {
    "OPENCV_CPU_DISABLE": "AVX512_SKX,AVX2,FMA3,AVX,FP16,POPCNT,SSE4_2,SSE4_1,SSSE3",
    "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX2 FMA3 AVX F16C",
    "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
}
# Runs at interpreter start in every process of the copy: OpenCV's own switch for its optimised code, one thread.
SITECUSTOMIZE = "import cv2\ncv2.setUseOptimized(False)\ncv2.setNumThreads(1)\n"


def outs(lock: dict, stage: str) -> dict:
    return {o["path"]: o["md5"] for o in lock["stages"][stage].get("outs", [])}


def test_pinned_inputs_and_pre_train_stages_are_the_same_bytes_with_kernels_switched_down(tmp_path):
    work, hooks = tmp_path / "clone", tmp_path / "hooks"
    work.mkdir()
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    fresh_copy(work)
    env = dict(os.environ, **SWITCHED_DOWN, PYTHONPATH=str(hooks), DVC_NO_ANALYTICS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    probe = run([sys.executable, "-c", "import cv2, numpy; print(cv2.useOptimized(), cv2.getNumThreads())"],
                work, env)
    assert probe.split()[:2] == ["False", "1"]  # the switches reached the stages' interpreters
    run(["git", "init", "-q"], work, env)
    run(["dvc", "pull", "--remote", "embedded", "data.dvc"], work, env)  # what `make data` does
    run(["dvc", "status", "--quiet", "data.dvc"], work, env)  # exit 1 if data/sources is not what data.dvc pins
    pinned = yaml.safe_load((REPO / "dvc.lock").read_text())
    log = run(["dvc", "repro", "--force", "--single-item", *PRE_TRAIN], work, env)
    missing = [stage for stage in PRE_TRAIN if f"Running stage '{stage}'" not in log]
    assert not missing, f"not rebuilt here: {missing}"  # the committed manifest alone would let DVC skip a stage
    rebuilt = yaml.safe_load((work / "dvc.lock").read_text())
    for stage in PRE_TRAIN:
        assert outs(rebuilt, stage) == outs(pinned, stage), stage
    assert (work / "data/splits/manifest.csv").read_bytes() == (REPO / "data/splits/manifest.csv").read_bytes()
