"""The model a user runs: the shipped file (no --model), a local file, or a URL pinned by sha256 (served here on
loopback); the operating point travels in the file."""
import hashlib
import http.server
import json
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from helpers.workspace import REPO

from micropatch.cli import main as cli
from micropatch.core.recipe import PREDICT_DEFAULTS, training_recipe
from micropatch.evaluation.postprocess import operating_mask
from micropatch.inference.shipped import SHIPPED_MODEL, resolve_model
from micropatch.training.network import build_model, load_checkpoint, save_checkpoint

RECORD = REPO / "results" / "idrid-ma-v2"
FAST = ["--runtime", "torch", "--compute", "fast"]  # torch is already imported in this process: the
#   reproducible pin needs a fresh one


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    """A small released checkpoint carrying an operating point of 0.3 and 5 px."""
    torch.manual_seed(0)
    model = build_model(1)
    with torch.no_grad():
        model.segmentation_head[0].bias.fill_(-1.0)
    recipe = training_recipe({"clahe_clip_limit": 2.0, "clahe_grid": 8, "fov_threshold": 15},
                             {"size": 128, "stride": 64}, {"mean": 0.449, "std": 0.226}, {"mode": "fast"}, "0" * 64)
    path = tmp_path_factory.mktemp("model") / "release.safetensors"
    save_checkpoint(path, model, recipe | {"lesions": ["MA"], "encoder": "resnet34", "attention": "scse",
                                           "operating_point": {"threshold": 0.3, "min_area": 5}}, half_weights=True)
    return path


class ModelServer(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(released):
    ModelServer.payload = released.read_bytes()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ModelServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/release.safetensors"
    httpd.shutdown()


def photo(synthetic_idrid) -> Path:
    return synthetic_idrid / "A. Segmentation/1. Original Images/a. Training Set/IDRiD_01.jpg"


def test_a_model_url_is_fetched_once_verified_and_used(released, server, synthetic_idrid, tmp_path, monkeypatch,
                                                       capsys):
    monkeypatch.setenv("MICROPATCH_CACHE", str(tmp_path / "cache"))
    digest = hashlib.sha256(released.read_bytes()).hexdigest()
    out = tmp_path / "out"
    assert cli(["predict", str(photo(synthetic_idrid)), "--model", server, "--model-sha256", digest, "--out", str(out),
                "--mode", "fast", *FAST]) == 0
    fetched = resolve_model(server, digest)
    assert fetched.read_bytes() == released.read_bytes() and str(tmp_path / "cache") in str(fetched)
    (call,) = json.loads((out / "predict_runs.json").read_text())["runs"]
    assert call["settings"]["model_file"] == str(fetched) and call["settings"]["model_sha256"] == digest


def test_a_model_url_with_a_wrong_or_missing_sha256_is_refused_and_nothing_is_kept(server, synthetic_idrid, tmp_path,
                                                                                   monkeypatch, capsys):
    monkeypatch.setenv("MICROPATCH_CACHE", str(tmp_path / "cache"))
    assert cli(["predict", str(photo(synthetic_idrid)), "--model", server, "--model-sha256", "0" * 64, "--out",
                str(tmp_path / "out"), *FAST]) == 2
    assert "is not the expected" in capsys.readouterr().err
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert cli(["predict", str(photo(synthetic_idrid)), "--model", server, "--out", str(tmp_path / "out"), *FAST]) == 2
    assert "needs --model-sha256" in capsys.readouterr().err


def test_the_models_operating_point_makes_the_masks_unless_overridden(released, synthetic_idrid, tmp_path, capsys):
    for extra, point in (([], (0.3, 5)), (["--threshold", "0.6", "--min-area", "0"], (0.6, 0))):
        out = tmp_path / "-".join(extra or ["model"])
        assert cli(["predict", str(photo(synthetic_idrid)), "--model", str(released), "--out", str(out),
                    "--mode", "fast", *extra, *FAST]) == 0
        probability = cv2.imread(str(out / "IDRiD_01_MA_probability.png"), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(out / "IDRiD_01_MA_mask.png"), cv2.IMREAD_UNCHANGED) > 0
        assert mask.any() and np.array_equal(mask, operating_mask(probability, *point))
        listed = json.loads((out / "IDRiD_01_lesions.json").read_text())
        assert listed["operating_point"] == {"threshold": point[0], "min_area": point[1]}


def test_half_stored_kernels_load_back_into_the_float_model(released):
    model, config = load_checkpoint(released)
    assert all(p.dtype == torch.float32 for p in model.parameters()) and config["operating_point"]["min_area"] == 5
    assert released.stat().st_size < 60e6  # ResNet34 U-Net: 98 MB in float32


def test_without_model_predict_uses_the_shipped_file_which_is_the_records_release():
    """The shipped model is the byte-identical file whose val figures results/idrid-ma-v2 reports."""
    assert resolve_model(None) == SHIPPED_MODEL and SHIPPED_MODEL.is_file()
    lock = yaml.safe_load((RECORD / "dvc.lock").read_text())
    release = next(o for o in lock["stages"]["operating-point"]["outs"] if o["path"].endswith("release.safetensors"))
    assert hashlib.md5(SHIPPED_MODEL.read_bytes()).hexdigest() == release["md5"]
    card = (SHIPPED_MODEL.parent / "MODEL_CARD.md").read_text()
    assert hashlib.sha256(SHIPPED_MODEL.read_bytes()).hexdigest() in card
    _, config = load_checkpoint(SHIPPED_MODEL)
    assert {"operating_point", "preprocess", "inference", "train_manifest_sha256"} <= set(config)


def test_the_committed_model_card_is_what_ship_writes_from_the_committed_results():
    """The card's tables come from the record's metrics and the benchmark results measured on this file: a result
    re-measured, or a record rescored, without `micropatch ship` leaves a stale card, and this fails."""
    from micropatch.project.modelcard import card

    results = REPO / "benchmarks" / "results"
    written = card(SHIPPED_MODEL, RECORD, results / "camera_shift_val.json", results / "runtimes_accuracy.json")
    assert written == (SHIPPED_MODEL.parent / "MODEL_CARD.md").read_text(), "run `micropatch ship`"
    assert "Not measured for this file yet" not in written  # both benchmarks measured the shipped file


@pytest.mark.slow
def test_predict_on_a_real_idrid_photograph_without_model(tmp_path, idrid):
    """The newcomer's first command on a fresh clone: the shipped model on a real 4288x2848 photograph."""
    import subprocess
    import sys

    image = next((idrid / "A. Segmentation/1. Original Images/a. Training Set").glob("IDRiD_0*.jpg"))
    done = subprocess.run([sys.executable, "-m", "micropatch.cli", "predict", str(image), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900,
                          env=os.environ | {"MICROPATCH_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    listed = json.loads((tmp_path / f"{image.stem}_lesions.json").read_text())
    assert (listed["width"], listed["height"]) == (4288, 2848) and listed["lesions"]
    settings = json.loads((tmp_path / "predict_runs.json").read_text())["runs"][0]["settings"]
    assert settings["model_file"] == str(SHIPPED_MODEL)
    assert {k: settings["inference"][k] for k in PREDICT_DEFAULTS} == PREDICT_DEFAULTS  # its int8 export is beside it
