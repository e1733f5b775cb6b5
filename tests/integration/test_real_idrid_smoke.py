"""Real-data smoke test: the real dvc.yaml on 3 real IDRiD images (native 4288x2848), when $MICROPATCH_IDRID is set.

download -> preprocess -> patient-split -> patchify (counts checked against the masks) -> audit -> one training
step -> fast-mode sliding window (paper's 128/64 windows near candidates) over one full image -> scores.
"""
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.workspace import dvc_workspace, require_idrid, run
from PIL import Image

from micropatch.data.patches import window_starts

pytestmark = pytest.mark.slow

IMAGES = ("IDRiD_01", "IDRiD_02", "IDRiD_03")
SEG = "A. Segmentation"


def copy_images(root: Path, dest: Path, image_ids) -> None:
    """The official layout holding only image_ids (their photographs and every mask they have)."""
    for path in (root / SEG).rglob("*"):
        stem = path.name.split(".")[0]  # IDRiD_01 (photograph) or IDRiD_01_MA (mask)
        if path.is_file() and (stem in image_ids or stem.rsplit("_", 1)[0] in image_ids):
            target = dest / SEG / path.relative_to(root / SEG)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    def three_real_images(params: dict) -> None:
        params["download"]["datasets"] = [{"name": "idrid", "adapter": "idrid", "source": "data/sources/IDRiD"}]
        params["roles"] = {"train_on": ["idrid"], "test_on": {"idrid_val": {"dataset": "idrid", "split": "val"}}}
        params["split"]["val_fraction"] = 0.34  # 2 train, 1 val
        params["train"].update(epochs=1, max_steps_per_epoch=1)
        # real files through every stage is this test's subject; bit identity is tests/unit/core/test_compute.py's,
        # and the fast kernels run its full-frame inference in 88 s instead of 210 s; fast mode (the records' and
        # predict's) skips the windows far from candidates (paper mode's windows: tests/unit/inference)
        params["compute"] = {"mode": "fast", "threads": 2}
        params["infer"]["mode"] = "fast"

    work = tmp_path_factory.mktemp("real")
    env = dvc_workspace(work, three_real_images)
    copy_images(require_idrid(), work / "data" / "sources" / "IDRiD", IMAGES)  # where a user puts it (data.dvc pins it)
    started = time.perf_counter()
    log = run(["dvc", "repro"], work, env)
    return work, log, time.perf_counter() - started


def expected_lesion_windows(mask_path: Path, size: int = 128, stride: int = 64) -> int:
    """Windows (flush-end grid) holding any lesion pixel, counted by brute force on the official mask."""
    mask = np.array(Image.open(mask_path).convert("L")) > 0
    return sum(bool(mask[y:y + size, x:x + size].any())
               for y in window_starts(mask.shape[0], size, stride) for x in window_starts(mask.shape[1], size, stride))


def test_every_stage_ran_on_real_images(smoke):
    work, log, seconds = smoke
    for stage in ("download", "preprocess", "patient-split", "patchify", "audit", "train", "infer@idrid_val", "score"):
        assert f"Running stage '{stage}'" in log
    assert json.loads((work / "metrics/leakage.json").read_text())["total_leaks"] == 0
    print(f"real-data smoke pipeline: {seconds:.0f} s")


def test_patch_counts_match_the_official_masks(smoke):
    work, _, _ = smoke
    per_image = {}
    for split in ("train", "val"):
        per_image |= json.loads((work / f"data/patches/{split}/meta.json").read_text())["per_image"]
    assert sorted(per_image) == [f"idrid/{i}" for i in IMAGES]
    truths = require_idrid() / SEG / "2. All Segmentation Groundtruths" / "a. Training Set" / "1. Microaneurysms"
    for image_id in IMAGES:
        counts = per_image[f"idrid/{image_id}"]
        assert counts["lesion_patches"] == expected_lesion_windows(truths / f"{image_id}_MA.tif"), image_id
        # about 10 % of the ~2,000 lesion-free windows inside the field of view
        assert 120 <= counts["background_patches"] <= 280, (image_id, counts)


def test_one_training_step_then_full_image_inference_and_scores(smoke):
    work, _, _ = smoke
    train = json.loads((work / "metrics/train.json").read_text())
    assert train["epochs_run"] == 1 and train["train_patches"] > 0
    (prediction,) = (work / "data/predictions/idrid_val").glob("*_MA.png")
    assert Image.open(prediction).size == (4288, 2848)
    ma = json.loads((work / "metrics/domains/idrid_val.json").read_text())["lesions"]["MA"]
    assert ma["n_images"] == 1 and ma["resolution"] == "4288x2848"
    assert all(0 <= ma[k] <= 1 for k in ("precision", "recall", "dice", "iou", "aupr_11", "ap"))
    summary = json.loads((work / "metrics/datasets.json").read_text())["idrid"]
    assert summary["median_resolution"] == "4288x2848" and summary["lesions"]["MA"]["components"] > 0
