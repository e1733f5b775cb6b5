"""`micropatch predict` on synthetic photographs: four outputs per image that agree with each other; clear errors."""
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from micropatch.cli import main as cli
from micropatch.model import build_model, load_checkpoint, save_checkpoint
from micropatch.recipe import training_recipe


FAST = ["--runtime", "torch", "--compute", "fast"]  # torch is already imported in this process: the
#   reproducible pin needs a fresh one


def recipe(clip_limit: float = 2.0) -> dict:
    return training_recipe({"clahe_clip_limit": clip_limit, "clahe_grid": 8, "fov_threshold": 15},
                           {"size": 128, "stride": 64}, {"mean": 0.449, "std": 0.226}, {"mode": "fast"}, "0" * 64)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_checkpoint(path, build_model(1), recipe() | {"lesions": ["MA"], "encoder": "resnet34", "attention": "scse"})
    return path


@pytest.fixture(scope="module")
def photos(synthetic_idrid, tmp_path_factory) -> dict[str, Path]:
    jpeg = synthetic_idrid / "A. Segmentation/1. Original Images/a. Training Set/IDRiD_01.jpg"
    folder = tmp_path_factory.mktemp("photos")
    rgb = Image.open(jpeg)
    rgb.save(folder / "eye_png.png")
    rgb.save(folder / "eye_tif.tif")
    return {"jpeg": jpeg, "png": folder / "eye_png.png", "tiff": folder / "eye_tif.tif"}


@pytest.mark.parametrize("mode, precision", [("paper", "fp32"), ("fast", "fp32"), ("fast", "int8")])
def test_predict_writes_four_consistent_outputs(checkpoint, photos, tmp_path, mode, precision, capsys):
    assert cli(["predict", str(photos["jpeg"]), "--model", str(checkpoint), "--out", str(tmp_path),
                "--mode", mode, "--precision", precision, *FAST]) == 0
    probability = cv2.imread(str(tmp_path / "IDRiD_01_MA_probability.png"), cv2.IMREAD_UNCHANGED)
    mask = cv2.imread(str(tmp_path / "IDRiD_01_MA_mask.png"), cv2.IMREAD_UNCHANGED) > 0
    overlay = cv2.imread(str(tmp_path / "IDRiD_01_overlay.png"))
    listed = json.loads((tmp_path / "IDRiD_01_lesions.json").read_text())
    assert probability.shape == mask.shape == overlay.shape[:2] == (224, 320)
    assert (mask == (probability / 255.0 >= 0.5)).all()
    lesions = listed["lesions"]
    count, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    assert len(lesions) == count - 1 > 0  # a random-init model still marks something: the list is exercised
    assert sum(row["area_px"] for row in lesions) == mask.sum()
    assert all(0.5 <= row["peak_probability"] <= 1 for row in lesions)
    with open(tmp_path / "IDRiD_01_lesions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["area_px"]) for r in rows] == [row["area_px"] for row in lesions]
    assert json.loads(capsys.readouterr().out.splitlines()[0])["lesions"] == len(lesions)


def test_png_and_tiff_inputs_give_the_same_map_as_their_jpeg(checkpoint, photos, tmp_path):
    assert cli(["predict", *map(str, photos.values()), "--model", str(checkpoint), "--out", str(tmp_path), *FAST]) == 0
    maps = [cv2.imread(str(tmp_path / f"{p.stem}_MA_probability.png"), cv2.IMREAD_UNCHANGED) for p in photos.values()]
    assert np.array_equal(maps[0], maps[1]) and np.array_equal(maps[0], maps[2])


def test_non_fundus_and_unreadable_images_get_clear_errors_and_no_outputs(checkpoint, photos, tmp_path, capsys):
    black = tmp_path / "black.png"
    Image.new("RGB", (320, 224)).save(black)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photos["jpeg"].read_bytes()[:200])
    out = tmp_path / "out"
    assert cli(["predict", str(black), str(broken), str(photos["jpeg"]), "--model", str(checkpoint),
                "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert f"{black}: under 5 %" in err and "does not look like a fundus photograph" in err
    assert f"{broken}: unreadable or truncated" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"IDRiD_01_{s}" for s in ("MA_probability.png", "MA_mask.png", "overlay.png", "lesions.json", "lesions.csv")]
        + ["predict_args.json"])


def test_duplicate_stems_are_refused_before_anything_is_written(checkpoint, photos, tmp_path, capsys):
    other = tmp_path / "other" / "IDRiD_01.png"
    other.parent.mkdir()
    Image.open(photos["jpeg"]).save(other)
    out = tmp_path / "out"
    assert cli(["predict", str(photos["jpeg"]), str(other), "--model", str(checkpoint), "--out", str(out), *FAST]) == 2
    assert "share the name 'IDRiD_01'" in capsys.readouterr().err and not out.exists()


def test_predict_preprocesses_as_the_model_was_trained(checkpoint, photos, tmp_path):
    """A model trained with CLAHE clip 4.0 is fed clip-4.0 images without being told; an explicit flag wins."""
    model, config = load_checkpoint(checkpoint)
    clip4 = tmp_path / "clip4.safetensors"
    save_checkpoint(clip4, model, config | recipe(4.0))
    runs = {"default recipe": [str(checkpoint)], "clip-4 recipe": [str(clip4)],
            "default recipe, --clahe-clip-limit 4": [str(checkpoint), "--clahe-clip-limit", "4.0"]}
    maps = {}
    for name, model_args in runs.items():
        out = tmp_path / name.replace(" ", "_")
        assert cli(["predict", str(photos["jpeg"]), "--model", *model_args, "--out", str(out), *FAST]) == 0
        maps[name] = (out / "IDRiD_01_MA_probability.png").read_bytes()
        args = json.loads((out / "predict_args.json").read_text())
        assert args["preprocess"]["clahe_clip_limit"] == (2.0 if name == "default recipe" else 4.0)
    assert maps["clip-4 recipe"] == maps["default recipe, --clahe-clip-limit 4"] != maps["default recipe"]
