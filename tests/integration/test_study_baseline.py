"""Recipe study_baseline (micropatch.square): the square frame and its way back, the colour augmentation, bytes that
do not depend on the CPU's SIMD, and the same dvc.yaml running it end to end on a small default with all four
lesions, scored by the same score stage as the micro-patching recipe (per lesion, with the lesion-mean row)."""
import colorsys
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers.workspace import dvc_workspace, run

from micropatch.data.square import (
    augment_colour,
    hsv_to_rgb,
    mask_to_square,
    rgb_to_hsv,
    square_frame,
    to_native,
    to_square,
)
from micropatch.training.squares import SquareTiles


def disc(height: int, width: int, radius: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return (yy - height / 2) ** 2 + (xx - width / 2) ** 2 <= radius ** 2


def test_square_frame_centres_the_fov_box_and_maps_back():
    fov = disc(300, 500, 140)  # a 281 px FOV box inside a wide frame
    frame = square_frame(fov, 128)
    assert max(frame.scaled_height, frame.scaled_width) == 128
    assert frame.pad_top == (128 - frame.scaled_height) // 2 and frame.top == 10 and frame.left == 110
    lesion = np.zeros_like(fov)
    lesion[100:160, 200:280] = True  # a 60x80 block
    square = mask_to_square(lesion, frame)
    assert square.dtype == np.uint8 and set(np.unique(square)) == {0, 1}
    back = to_native(square[None].astype(np.float32), frame, fov.shape)[0] >= 0.5
    iou = (back & lesion).sum() / (back | lesion).sum()
    assert iou > 0.9, iou
    assert not back[~disc(300, 500, 160)].any()  # nothing lands outside the FOV box


def test_to_square_pads_with_zeros_and_keeps_channels():
    rgb = np.full((90, 200, 3), 200, np.uint8)
    fov = np.zeros((90, 200), bool)
    fov[10:80, 20:180] = True  # 70 x 160: wider than high
    frame = square_frame(fov, 64)
    square = to_square(rgb, frame)
    assert square.shape == (64, 64, 3)
    assert (square[:frame.pad_top] == 0).all()
    assert (square[frame.pad_top:frame.pad_top + frame.scaled_height] == 200).all()


def test_hsv_matches_colorsys_and_round_trips():
    rgb = np.random.default_rng(0).random((500, 3)).astype(np.float32)
    rgb[:5] = [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 0], [0, 0, 1]]  # greys: hue 0, saturation 0
    hsv = rgb_to_hsv(rgb)
    expected = np.array([colorsys.rgb_to_hsv(*p) for p in rgb.astype(np.float64)])
    np.testing.assert_allclose(hsv, expected, atol=1e-5)
    np.testing.assert_allclose(hsv_to_rgb(hsv), rgb, atol=1e-5)


def test_colour_augmentation_is_seeded_and_stays_in_range():
    patch = np.random.default_rng(1).integers(0, 256, (32, 32, 3)).astype(np.float32)
    settings = {"hue": 0.05, "saturation": 0.2, "brightness": 0.2, "contrast": 0.2}
    one = augment_colour(patch, np.random.default_rng(5), **settings)
    two = augment_colour(patch, np.random.default_rng(5), **settings)
    assert np.array_equal(one, two) and one.min() >= 0 and one.max() <= 255
    assert not np.allclose(one, patch, atol=1)  # it changes the colours
    unchanged = augment_colour(patch, np.random.default_rng(5), hue=0, saturation=0, brightness=0, contrast=0)
    np.testing.assert_allclose(unchanged, patch, atol=1e-3)


def test_tiles_cover_every_square_and_overlap_only_where_the_last_is_flush_with_the_edge(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (2, 100, 100, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "masks.npy", np.zeros((2, 1, 100, 100), np.uint8))
    tiles = SquareTiles(tmp_path, 48)
    covered = np.zeros((2, 100, 100), int)
    for n, y, x in tiles.tiles:
        covered[n, y:y + 48, x:x + 48] += 1
    # starts 0, 48, 52 on each axis: every pixel once, except rows / columns 52..95, covered by the last two tiles
    once = np.ones(100, int)
    once[52:96] = 2
    assert np.array_equal(covered[0], np.outer(once, once)) and np.array_equal(covered[1], covered[0])
    assert len(tiles) == 2 * 9
    image, mask = tiles[0]
    assert image.shape == (3, 48, 48) and torch.equal(image, torch.from_numpy(images[0, :48, :48].transpose(2, 0, 1)
                                                                                  .astype(np.float32)))
    assert (tiles.weights() == 1).all()


PROBE = """
import hashlib, sys
import numpy as np
from micropatch.data.square import augment_colour, mask_to_square, square_frame, to_native, to_square
rng = np.random.default_rng(3)
rgb = rng.integers(0, 256, (683, 1021, 3), dtype=np.uint8)
yy, xx = np.mgrid[:683, :1021]
fov = (yy - 341) ** 2 + (xx - 510) ** 2 <= 330 ** 2
frame = square_frame(fov, 400)
out = [to_square(rgb, frame), mask_to_square(rng.random((683, 1021)) > 0.99, frame),
       augment_colour(to_square(rgb, frame)[:64, :64].astype(np.float32), np.random.default_rng(0), 0.05, 0.2, 0.2,
                      0.2),
       to_native(rng.random((2, 400, 400)).astype(np.float32), frame, fov.shape)]  # the maps' way back
print(hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in out)).hexdigest())
"""


def test_square_bytes_do_not_depend_on_simd():
    """What an older CPU would compute: OpenCV and NumPy with their SIMD paths switched off, one thread."""
    def digest(extra: dict) -> str:
        env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
        return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                              check=True).stdout.strip()

    plain = digest({})
    assert plain == digest({"OPENCV_CPU_DISABLE": "AVX512_SKX,AVX2,FMA3,AVX,POPCNT,SSSE3",
                            "NPY_DISABLE_CPU_FEATURES": "AVX512_SKX,AVX512F,AVX2,FMA3,AVX,F16C"})


def small_baseline(params: dict) -> None:
    params["synthetic"]["synthetic"].update(n_images=6, width=384, height=256, seed=3)
    for stand_in in ("ddr", "eophtha"):
        params["synthetic"][stand_in].update(n_images=4, width=320, height=224)
    params["split"]["val_fraction"] = 0.34
    params["lesions"] = ["MA", "HE", "EX", "SE"]  # four maps, through the same score stage
    params["recipe"] = "study_baseline"
    params["study_baseline"].update(side=192, patch=96, crops_per_image=2)
    params["train"].update(epochs=2, batch_size=4, early_stopping_patience=2)


@pytest.mark.slow
def test_same_dvc_yaml_runs_and_scores_the_study_baseline_on_four_lesions(tmp_path):
    env = dvc_workspace(tmp_path, small_baseline)
    run([sys.executable, "-m", "micropatch.cli", "synth", "--out", "data/sources"], tmp_path, env)
    log = run(["dvc", "repro"], tmp_path, env)
    for stage in ("patchify", "audit", "train", "operating-point", "infer@synthetic_val", "infer@eophtha", "score"):
        assert f"Running stage '{stage}'" in log
    meta = json.loads((tmp_path / "data/patches/train/meta.json").read_text())
    assert meta["kind"] == "squares" and meta["side"] == 192
    assert np.load(tmp_path / "data/patches/train/images.npy", mmap_mode="r").shape[1:] == (192, 192, 3)
    leakage = json.loads((tmp_path / "metrics/leakage.json").read_text())
    val = json.loads((tmp_path / "data/patches/val/meta.json").read_text())
    # every square
    assert leakage["total_leaks"] == 0 and leakage["patches_checked"] == meta["patches"] + val["patches"]
    from micropatch.training.network import load_checkpoint

    model, config = load_checkpoint(tmp_path / "data/model/release.safetensors")
    assert config["recipe"] == "study_baseline" and config["encoder"] == "se_resnet101"
    assert config["in_channels"] == 3 and config["inference"]["window"] == 96
    # maps in each image's native frame, scored by the same score stage for every domain
    from micropatch.core.fileio import read_png

    for row in (tmp_path / "data/splits/manifest.csv").read_text().splitlines()[1:]:
        dataset, image_id, *_ = row.split(",")
        if dataset == "eophtha":
            truth = read_png(tmp_path / f"data/preprocessed/eophtha/{image_id}_MA.png")
            assert read_png(tmp_path / f"data/predictions/eophtha/{image_id}_MA.png").shape == truth.shape
    rows = json.loads((tmp_path / "metrics/cross_domain.json").read_text())
    lesions = {d: [r["lesion"] for r in rows if r["domain"] == d] for d in ("synthetic_val", "ddr_test", "eophtha")}
    assert lesions == {"synthetic_val": ["MA", "HE", "EX", "SE", "mean"], "ddr_test": ["MA", "HE", "EX", "SE", "mean"],
                       "eophtha": ["MA"]}  # e-ophtha annotates MA only: nothing else is scored there, no mean row
    assert all(0 <= r["aupr_11"] <= 1 for r in rows)
    val = {r["lesion"]: r for r in rows if r["domain"] == "synthetic_val"}
    assert val["mean"]["dice"] == pytest.approx(np.mean([val[k]["dice"] for k in ("MA", "HE", "EX", "SE")]))
    scores = json.loads((tmp_path / "metrics/domains/synthetic_val.json").read_text())
    assert scores["lesion_mean"]["aupr_11"] == pytest.approx(val["mean"]["aupr_11"])
    assert "lesion_mean" not in json.loads((tmp_path / "metrics/domains/eophtha.json").read_text())
    assert "| synthetic_val | mean | no |" in (tmp_path / "metrics/cross_domain.md").read_text()
    assert "Data and pipelines are up to date" in run(["dvc", "repro"], tmp_path, env)


def test_predict_runs_a_study_baseline_model_in_its_square_frame(synthetic_idrid, tmp_path, capsys):
    """`micropatch predict` reads the recipe from the file: the RGB photograph in the model's square frame, maps in
    the native frame, on torch fp32 (the other runtimes are refused with the reason)."""
    from micropatch.cli import main as cli
    from micropatch.core.fileio import read_fundus, read_png
    from micropatch.core.recipe import predict_setting, training_recipe
    from micropatch.training.network import build_model, save_checkpoint

    torch.manual_seed(0)
    model_path = tmp_path / "baseline.safetensors"
    config = training_recipe({"clahe_clip_limit": 2.0, "clahe_grid": 8, "fov_threshold": 15}, {}, {"mean": 0.449,
                             "std": 0.226}, {"mode": "fast"}, "0" * 64, {"side": 96, "patch": 64})
    assert config["recipe"] == "study_baseline" and config["inference"]["window"] == 64
    save_checkpoint(model_path, build_model(2, "resnet18", None, None, in_channels=3),
                    config | {"lesions": ["MA", "EX"], "encoder": "resnet18", "attention": None, "in_channels": 3})
    assert predict_setting(model_path, None, None, None) == ("torch", "fp32")
    with pytest.raises(ValueError, match="torch fp32 only"):
        predict_setting(model_path, "openvino", None, None)
    photo = synthetic_idrid / "A. Segmentation/1. Original Images/a. Training Set/IDRiD_01.jpg"
    assert cli(["predict", str(photo), "--model", str(model_path), "--out", str(tmp_path / "out"), "--runtime",
                "torch", "--compute", "fast"]) == 0
    height, width = read_fundus(photo).shape[:2]
    for lesion in ("MA", "EX"):
        assert read_png(tmp_path / "out" / f"IDRiD_01_{lesion}_probability.png").shape == (height, width)
    capsys.readouterr()
    assert cli(["export", str(model_path)]) == 2  # an InputError, said on stderr
    assert "torch fp32 only" in capsys.readouterr().err


def test_an_unknown_recipe_is_refused_by_name(tmp_path):
    from micropatch.project.pipeline import render

    env = dvc_workspace(tmp_path, lambda params: params.update(recipe="micropatch"))
    assert env and (tmp_path / "dvc.yaml").is_file()
    params = (tmp_path / "params.yaml").read_text().replace("recipe: micropatch", "recipe: study-baseline")
    (tmp_path / "params.yaml").write_text(params)
    with pytest.raises(ValueError, match="recipe 'study-baseline': choose one of"):
        render(tmp_path, code=tmp_path)
