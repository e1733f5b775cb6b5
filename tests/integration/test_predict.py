"""`micropatch predict` on synthetic photographs: outputs that agree with each other; folders; the run record; other
cameras by default; one-line refusals before the model loads; nothing left half-written."""
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from micropatch.cli import main as cli
from micropatch.core.recipe import AUTO_RESCALE_TOLERANCE, training_recipe
from micropatch.inference import runtimes
from micropatch.training.network import build_model, load_checkpoint, save_checkpoint

FAST = ["--runtime", "torch", "--compute", "fast"]  # torch is already imported in this process: the
#   reproducible pin needs a fresh one
OUTPUT_SUFFIXES = ("MA_probability.png", "MA_mask.png", "overlay.jpg", "lesions.json", "lesions.csv")


def recipe(clip_limit: float = 2.0, fov_diameter: int | None = None) -> dict:
    config = training_recipe({"clahe_clip_limit": clip_limit, "clahe_grid": 8, "fov_threshold": 15},
                             {"size": 128, "stride": 64}, {"mean": 0.449, "std": 0.226}, {"mode": "fast"}, "0" * 64)
    if fov_diameter:
        config["inference"]["fov_diameter"] = fov_diameter
    return config | {"lesions": ["MA"], "encoder": "resnet34", "attention": "scse"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_checkpoint(path, build_model(1), recipe())
    return path


@pytest.fixture(scope="module")
def photos(synthetic_idrid, tmp_path_factory) -> dict[str, Path]:
    jpeg = synthetic_idrid / "A. Segmentation/1. Original Images/a. Training Set/IDRiD_01.jpg"
    folder = tmp_path_factory.mktemp("photos")
    rgb = Image.open(jpeg)
    rgb.save(folder / "eye_png.png")
    rgb.save(folder / "eye_tif.tif")
    return {"jpeg": jpeg, "png": folder / "eye_png.png", "tiff": folder / "eye_tif.tif"}


def outputs(folder: Path, stem: str) -> list[Path]:
    return [folder / f"{stem}_{suffix}" for suffix in OUTPUT_SUFFIXES]


def runs(out: Path) -> list[dict]:
    return json.loads((out / "predict_runs.json").read_text())["runs"]


@pytest.mark.parametrize("mode, precision", [("paper", "fp32"), ("fast", "fp32"), ("fast", "int8")])
def test_predict_writes_consistent_outputs(checkpoint, photos, tmp_path, mode, precision, capsys):
    assert cli(["predict", str(photos["jpeg"]), "--model", str(checkpoint), "--out", str(tmp_path),
                "--mode", mode, "--precision", precision, *FAST]) == 0
    probability = cv2.imread(str(tmp_path / "IDRiD_01_MA_probability.png"), cv2.IMREAD_UNCHANGED)
    mask = cv2.imread(str(tmp_path / "IDRiD_01_MA_mask.png"), cv2.IMREAD_UNCHANGED) > 0
    overlay = cv2.imread(str(tmp_path / "IDRiD_01_overlay.jpg"))
    listed = json.loads((tmp_path / "IDRiD_01_lesions.json").read_text())
    assert probability.shape == mask.shape == overlay.shape[:2] == (224, 320)
    assert (mask == (probability / 255.0 >= 0.5)).all()
    lesions = listed["lesions"]
    count, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    assert len(lesions) == count - 1 > 0 and listed["counts"] == {"MA": len(lesions)}
    assert sum(row["area_px"] for row in lesions) == mask.sum()
    assert all(0.5 <= row["peak_probability"] <= 1 for row in lesions)
    with open(tmp_path / "IDRiD_01_lesions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["area_px"]) for r in rows] == [row["area_px"] for row in lesions]
    assert json.loads(capsys.readouterr().out.splitlines()[0])["lesions"] == len(lesions)
    assert not list(tmp_path.glob(".staged*")), "the staging folder is gone"


def test_png_and_tiff_inputs_give_the_same_map_as_their_jpeg(checkpoint, photos, tmp_path):
    assert cli(["predict", *map(str, photos.values()), "--model", str(checkpoint), "--out", str(tmp_path), *FAST]) == 0
    maps = [cv2.imread(str(tmp_path / f"{p.stem}_MA_probability.png"), cv2.IMREAD_UNCHANGED) for p in photos.values()]
    assert np.array_equal(maps[0], maps[1]) and np.array_equal(maps[0], maps[2])


def test_a_photograph_refused_while_predicting_leaves_no_files_and_is_recorded(checkpoint, photos, tmp_path, capsys):
    black = tmp_path / "black.png"
    Image.new("RGB", (320, 224)).save(black)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photos["jpeg"].read_bytes()[:200])
    out = tmp_path / "out"
    assert cli(["predict", str(black), str(broken), str(photos["jpeg"]), "--model", str(checkpoint),
                "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert f"{black}: under 5 %" in err and "does not look like a fundus photograph" in err
    assert f"{broken}: unreadable" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [p.name for p in outputs(out, "IDRiD_01")] + ["predict_runs.json", "report.html"])
    (call,) = runs(out)
    assert [d["image"] for d in call["done"]] == [str(photos["jpeg"])]
    reasons = {r["image"]: r["reason"] for r in call["refused"]}
    assert set(reasons) == {str(black), str(broken)} and "fundus photograph" in reasons[str(black)]


def test_duplicate_stems_are_refused_before_anything_is_written(checkpoint, photos, tmp_path, capsys):
    other = tmp_path / "other" / "IDRiD_01.png"
    other.parent.mkdir()
    Image.open(photos["jpeg"]).save(other)
    out = tmp_path / "out"
    assert cli(["predict", str(photos["jpeg"]), str(other), "--model", str(checkpoint), "--out", str(out), *FAST]) == 2
    assert "share the name 'IDRiD_01'" in capsys.readouterr().err and not out.exists()


def test_predict_preprocesses_as_the_model_was_trained(checkpoint, photos, tmp_path, caplog):
    """A model trained with CLAHE clip 4.0 is fed clip-4.0 images without being told; an explicit flag wins, and
    is the only setting logged."""
    model, config = load_checkpoint(checkpoint)
    clip4 = tmp_path / "clip4.safetensors"
    save_checkpoint(clip4, model, config | recipe(4.0))
    runs_by_name = {"default recipe": [str(checkpoint)], "clip-4 recipe": [str(clip4)],
                    "default recipe, --clahe-clip-limit 4": [str(checkpoint), "--clahe-clip-limit", "4.0"]}
    maps = {}
    for name, model_args in runs_by_name.items():
        out = tmp_path / name.replace(" ", "_")
        caplog.clear()
        with caplog.at_level("INFO"):
            assert cli(["predict", str(photos["jpeg"]), "--model", *model_args, "--out", str(out), *FAST]) == 0
        given = [r.getMessage() for r in caplog.records if "as given" in r.getMessage()]
        assert given == (["preprocess.clahe_clip_limit: using 4.0 as given, not the model's 2.0"]
                         if "--clahe-clip-limit" in model_args else [])
        maps[name] = (out / "IDRiD_01_MA_probability.png").read_bytes()
        assert runs(out)[0]["settings"]["preprocess"]["clahe_clip_limit"] == (2.0 if name == "default recipe" else 4.0)
    assert maps["clip-4 recipe"] == maps["default recipe, --clahe-clip-limit 4"] != maps["default recipe"]


def test_a_folder_is_predicted_with_its_subfolders_mirrored(checkpoint, photos, tmp_path):
    folder = tmp_path / "photos"
    for sub in ("left", "right"):  # the same stem in two subfolders: two output folders, no clash
        (folder / sub).mkdir(parents=True)
        Image.open(photos["jpeg"]).save(folder / sub / "eye.jpg")
    Image.open(photos["jpeg"]).save(folder / "top.png")
    (folder / "notes.txt").write_text("not a photograph")
    out = tmp_path / "out"
    assert cli(["predict", str(folder), "--model", str(checkpoint), "--out", str(out), *FAST]) == 0
    assert [d["files"] for d in runs(out)[0]["done"]] == ["top"]  # no --recursive: the folder's own files
    assert cli(["predict", str(folder), "--recursive", "--model", str(checkpoint), "--out", str(out), *FAST]) == 0
    assert [d["files"] for d in runs(out)[1]["done"]] == ["left/eye", "right/eye", "top"]
    assert all(p.is_file() for p in outputs(out / "left", "eye") + outputs(out / "right", "eye"))
    assert len(runs(out)) == 2  # appended per call
    page = (out / "report.html").read_text()
    assert page.count('class="card"') == 3 and 'href="left/eye_lesions.csv"' in page


def test_the_out_folder_inside_an_input_folder_is_not_read_as_input(checkpoint, photos, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.open(photos["jpeg"]).save(folder / "eye.jpg")
    for _ in range(2):  # the second call would find the first call's JPEG overlays
        assert cli(["predict", str(folder), "--recursive", "--model", str(checkpoint), "--out",
                    str(folder / "maps"), *FAST]) == 0
    assert [d["files"] for run in runs(folder / "maps") for d in run["done"]] == ["eye", "eye"]


def test_a_photograph_of_another_size_is_rescaled_by_default_and_its_area_filter_with_it(photos, tmp_path, caplog):
    """The model's training FOV is 2x the photograph's: auto resamples it (one log line), scales min_area by the
    area ratio and writes both into its lesion list; --rescale-fov off predicts at its own size."""
    model_path = tmp_path / "model.safetensors"
    torch.manual_seed(0)
    save_checkpoint(model_path, build_model(1), recipe(fov_diameter=476) | {"operating_point": {
        "threshold": 0.5, "min_area": 40}})
    out = tmp_path / "auto"
    with caplog.at_level("INFO"):
        assert cli(["predict", str(photos["jpeg"]), "--model", str(model_path), "--out", str(out), *FAST]) == 0
    listed = json.loads((out / "IDRiD_01_lesions.json").read_text())
    assert listed["fov_diameter_px"] == 238 and listed["scale"] == 2.0
    assert listed["applied_point"] == {"MA": {"threshold": 0.5, "min_area": 10}}
    assert sum("resampled x2.00" in r.getMessage() for r in caplog.records) == 1
    assert all(row["area_px"] >= 10 for row in listed["lesions"])
    assert cli(["predict", str(photos["jpeg"]), "--model", str(model_path), "--out", str(tmp_path / "off"),
                "--rescale-fov", "off", *FAST]) == 0
    native = json.loads((tmp_path / "off" / "IDRiD_01_lesions.json").read_text())
    assert native["scale"] == 1.0 and native["applied_point"]["MA"]["min_area"] == 40


def test_auto_leaves_a_photograph_within_the_tolerance_at_its_own_size(photos, tmp_path):
    model_path = tmp_path / "model.safetensors"
    near = int(238 * (1 + AUTO_RESCALE_TOLERANCE * 0.9))
    save_checkpoint(model_path, build_model(1), recipe(fov_diameter=near))
    assert cli(["predict", str(photos["jpeg"]), "--model", str(model_path), "--out", str(tmp_path / "o"), *FAST]) == 0
    assert json.loads((tmp_path / "o" / "IDRiD_01_lesions.json").read_text())["scale"] == 1.0


def test_a_field_of_view_far_below_the_models_is_refused_with_the_reason(photos, tmp_path, capsys):
    model_path = tmp_path / "model.safetensors"
    save_checkpoint(model_path, build_model(1), recipe(fov_diameter=238 * 5))
    out = tmp_path / "out"
    assert cli(["predict", str(photos["jpeg"]), "--model", str(model_path), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "field of view is 238 px across, under 1/4.5 of the model's training images' (1190 px)" in err
    assert not out.exists()


# ------------------------------------------------------------------------ refused before the model loads


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model fails the test: the refusals under test come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")
    monkeypatch.setattr(runtimes, "load_model", refuse)


def pickle_that_writes(marker: Path, path: Path) -> Path:
    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "pickle code ran"))
    torch.save({"state": Payload()}, path)
    return path


def refusal_cases(tmp_path: Path, photos: dict, checkpoint: Path) -> dict:
    """name: (predict arguments, text the one stderr line must hold, files that must not appear)."""
    random_bytes = tmp_path / "random.safetensors"
    random_bytes.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    marker = tmp_path / "pickle_ran"
    pickle = pickle_that_writes(marker, tmp_path / "model.pt")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    tiny = tmp_path / "tiny.png"
    Image.open(photos["jpeg"]).resize((64, 64)).save(tiny)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    jpeg, model = str(photos["jpeg"]), ["--model", str(checkpoint)]
    return {
        "random bytes as the model": ([jpeg, "--model", str(random_bytes), "--out", str(out)],
                                      f"not a safetensors file: {random_bytes}", [out]),
        "a pickle as the model": ([jpeg, "--model", str(pickle), "--out", str(out)],
                                  f"not a safetensors file: {pickle}", [out, marker]),
        "a folder as the model": ([jpeg, "--model", str(empty), "--out", str(out)], "a folder, not a model file",
                                  [out]),
        "a model that does not exist": ([jpeg, "--model", str(tmp_path / "nope.safetensors"), "--out", str(out)],
                                        "model file does not exist", [out]),
        "--out is a file": ([jpeg, *model, "--out", str(a_file)], "an existing file, not a folder", []),
        "--out cannot be written": ([jpeg, *model, "--out", "/proc/micropatch/out"], "is not writable",
                                    [Path("/proc/micropatch")]),
        "--threshold 2": ([jpeg, *model, "--out", str(out), "--threshold", "2"], "not a probability in [0, 1]",
                          [out]),
        "--min-area -1": ([jpeg, *model, "--out", str(out), "--min-area", "-1"], "not a pixel count >= 0", [out]),
        "a 64x64 image": ([str(tiny), *model, "--out", str(out)], "smaller than one 128 px window", [out]),
        "an image that does not exist": ([str(tmp_path / "nope.jpg"), *model, "--out", str(out)],
                                         "nope.jpg: does not exist", [out]),
        "a folder without photographs": ([str(empty), *model, "--out", str(out)], "no JPEG, PNG or TIFF", [out]),
    }


CASES = ("random bytes as the model", "a pickle as the model", "a folder as the model", "a model that does not exist",
         "--out is a file", "--out cannot be written", "--threshold 2", "--min-area -1", "a 64x64 image",
         "an image that does not exist", "a folder without photographs")


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_before_the_model_loads_and_leaves_nothing(case, photos, checkpoint, tmp_path,
                                                                               capsys, no_model_load):
    args, message, absent = refusal_cases(tmp_path, photos, checkpoint)[case]
    try:
        code = cli(["predict", *args, *FAST])
    except SystemExit as exit_:  # argparse's refusals
        code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert lines[0].startswith("micropatch predict: error:")
    assert not [p for p in absent if p.exists()]


def test_a_corrupt_run_record_is_refused_and_kept(checkpoint, photos, tmp_path, capsys, no_model_load):
    out = tmp_path / "out"
    out.mkdir()
    (out / "predict_runs.json").write_text("{not json")
    assert cli(["predict", str(photos["jpeg"]), "--model", str(checkpoint), "--out", str(out), *FAST]) == 2
    assert "not a micropatch run record" in capsys.readouterr().err
    assert (out / "predict_runs.json").read_text() == "{not json"


# ------------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_ends_with_one_line_exit_130_and_only_whole_photographs(checkpoint, photos, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(40):  # far more than can finish between the first line and the signal, even on a loaded CPU
        Image.open(photos["jpeg"]).save(folder / f"eye{k:02d}.png")
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-m", "micropatch.cli", "predict", str(folder), "--model",
                              str(checkpoint), "--out", str(out), "--runtime", "torch", "--mode", "paper",
                              "--compute", "fast", "--threads", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             # as a terminal runs it: a CI job started in the background inherits SIGINT ignored,
                             # and Python then never turns Ctrl-C into KeyboardInterrupt
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = child.stdout.readline()  # the first photograph is done: the child is inside the next one
    assert json.loads(first)["image"].endswith("eye00.png")
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("micropatch predict: interrupted: ")
    (call,) = runs(out)
    done = [d["files"] for d in call["done"]]
    assert call["interrupted"] and 1 <= len(done) < 40
    stems = {p.name.split("_")[0] for p in out.iterdir() if p.name.startswith("eye")}
    assert stems == set(done), "a photograph's files land together or not at all"
    assert all(p.is_file() for stem in done for p in outputs(out, stem))
    assert not list(out.glob(".staged*")) and (out / "report.html").is_file()


# ------------------------------------------------------------------------ the report, in a real browser


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = subprocess.run(["which", name], capture_output=True, text=True).stdout.strip()
        if path:
            return path
    if os.environ.get("MICROPATCH_REQUIRE_CHROMIUM"):
        pytest.fail("MICROPATCH_REQUIRE_CHROMIUM is set but no chromium is installed (Debian: apt-get install "
                    "chromium)")
    return None


def test_the_report_opens_in_headless_chromium_with_its_counts(checkpoint, photos, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("no chromium here (CI installs it: .ci/run)")
    out = tmp_path / "out"
    assert cli(["predict", str(photos["jpeg"]), str(photos["png"]), "--model", str(checkpoint), "--out", str(out),
                *FAST]) == 0
    counts = {d["files"]: d["counts"]["MA"] for d in runs(out)[0]["done"]}
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600"]
    page = (out / "report.html").as_uri()
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", page], capture_output=True, timeout=120, check=True)
    pixels = cv2.imread(str(shot))
    assert pixels is not None and pixels.shape[:2] == (1600, 1200)
    assert pixels.std() > 20, "the page rendered blank"
    # the embedded preview rendered: the page holds the fundus's orange, which the page's own colours never use
    orange = (pixels[..., 2] > 150) & (pixels[..., 1] < 120) & (pixels[..., 0] < 90)
    assert orange.mean() > 0.01
    dom = subprocess.run([browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    for files, count in counts.items():
        assert f'<span class="count" data-lesion="MA">{count}</span>' in dom
    assert f"<b>{sum(counts.values())}</b>" in dom and "http" not in dom.split("<body>")[0]
