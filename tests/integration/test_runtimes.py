"""ONNX export and the ONNX Runtime / OpenVINO runtimes: the same maps as torch (within 1e-4 in fp32, on real
IDRiD windows when the copy is here), the recipe in the file, the shipped int8 export, and clear refusals."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers.workspace import REPO, idrid_root, require_idrid

from micropatch.core.fileio import InputError, read_fundus, sha256_file
from micropatch.core.recipe import int8_export_path, read_recipe, training_recipe
from micropatch.data.preprocessing import green_clahe
from micropatch.inference.export import export_onnx, outer_convolutions, quantize_int8
from micropatch.inference.modes import DEFAULTS, predict_probability
from micropatch.inference.runtimes import ExportedModel, load_model
from micropatch.inference.shipped import SHIPPED_MODEL
from micropatch.training.network import build_model, load_checkpoint, normalise, save_checkpoint

pytestmark = pytest.mark.slow  # each export traces the network (about 25 s)


def real_or_synthetic_windows(n: int = 40) -> np.ndarray:
    """uint8 (n, 1, 128, 128): windows of a real IDRiD photograph's CLAHE green; synthetic ones without the copy,
    unless $MICROPATCH_REQUIRE_IDRID is set (CI), where a missing copy fails the test (conftest.require_idrid)."""
    root = idrid_root() or (require_idrid() if os.environ.get("MICROPATCH_REQUIRE_IDRID") else None)
    if root:
        rgb = read_fundus(root / "A. Segmentation/1. Original Images/a. Training Set/IDRiD_03.jpg")
    else:
        from micropatch.data.synthetic import SyntheticSpec, synth_fundus

        rgb = synth_fundus(3, SyntheticSpec(width=1024, height=680))[0]
    green = green_clahe(rgb)
    rng = np.random.default_rng(0)
    h, w = green.shape
    ys, xs = rng.integers(h // 5, 4 * h // 5 - 128, n), rng.integers(w // 5, 4 * w // 5 - 128, n)
    return np.stack([green[y:y + 128, x:x + 128] for y, x in zip(ys, xs)])[:, None]


def tiny_checkpoint(folder: Path) -> Path:
    """A seeded ResNet18 U-Net on 64 px windows: quick to export."""
    torch.manual_seed(0)
    checkpoint = folder / "tiny.safetensors"
    recipe = training_recipe({"clahe_clip_limit": 2.0, "clahe_grid": 8, "fov_threshold": 15},
                             {"size": 64, "stride": 32}, {"mean": 0.449, "std": 0.226}, {"mode": "fast"}, "0" * 64)
    save_checkpoint(checkpoint, build_model(1, "resnet18", None, "scse"),
                    recipe | {"lesions": ["MA"], "encoder": "resnet18", "attention": "scse"})
    return checkpoint


@pytest.fixture(scope="module")
def shipped_fp32(tmp_path_factory) -> tuple[torch.nn.Module, dict, Path]:
    """The shipped model and its fp32 export (written once for the module)."""
    model, config = load_checkpoint(SHIPPED_MODEL)
    path = export_onnx(model, config, tmp_path_factory.mktemp("onnx") / "model.onnx", sha256_file(SHIPPED_MODEL))
    return model, config, path


def torch_logits(model: torch.nn.Module, windows: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(normalise(torch.from_numpy(windows))).numpy()


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_fp32_export_gives_torchs_maps_within_1e4(shipped_fp32, runtime):
    model, config, path = shipped_fp32
    windows = real_or_synthetic_windows(40)  # 40: one full batch of 32 and a short one (OpenVINO's two shapes)
    exported = ExportedModel(path, runtime, "fp32", threads=2)
    expected = torch.sigmoid(torch.from_numpy(torch_logits(model, windows))).numpy()
    got = torch.sigmoid(exported(normalise(torch.from_numpy(windows)))).numpy()
    assert got.shape == expected.shape == (40, 1, 128, 128)
    assert np.abs(got - expected).max() < 1e-4


def test_the_export_carries_the_models_recipe_and_source(shipped_fp32):
    _, config, path = shipped_fp32
    recipe = read_recipe(path)
    assert {k: recipe[k] for k in config} == config  # lesions, preprocessing, windows, operating point, ...
    assert recipe["onnx"]["precision"] == "fp32" and recipe["onnx"]["source_sha256"] == sha256_file(SHIPPED_MODEL)
    graph = onnx.load_model(str(path)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]


def test_fast_mode_on_openvino_marks_the_pixels_torch_marks(shipped_fp32):
    """A whole frame through predict_probability: fast mode's refinement rounds and short batches included."""
    model, config, path = shipped_fp32
    from micropatch.data.preprocessing import fov_mask
    from micropatch.data.synthetic import SyntheticSpec, synth_fundus

    rgb = synth_fundus(5, SyntheticSpec(width=640, height=448))[0]
    image, fov = green_clahe(rgb), fov_mask(rgb)
    params = DEFAULTS | config["inference"] | {"mode": "fast", "refine_threshold": 0.15}
    expected = predict_probability(model, image, fov, params)
    got = predict_probability(ExportedModel(path, "openvino", "fp32", threads=2), image, fov,
                              params | {"runtime": "openvino"})
    assert np.abs(got - expected).max() < 1e-4


def test_int8_export_quantizes_all_but_the_stem_and_head_and_stays_close(shipped_fp32, tmp_path):
    model, config, path = shipped_fp32
    windows = real_or_synthetic_windows(48)
    out = quantize_int8(path, tmp_path / "model-int8.onnx", normalise(torch.from_numpy(windows[:32])).numpy(),
                        {"windows": 32})
    proto = onnx.load_model(str(out))
    recipe = read_recipe(out)
    assert recipe["onnx"]["precision"] == "int8" and recipe["onnx"]["calibration"] == {"windows": 32}
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") > 50
    stem, head = outer_convolutions(proto)
    produced_by = {o: n for n in proto.graph.node for o in n.output}
    for name in (stem, head):  # float weights: not fed by a DequantizeLinear
        conv = next(n for n in proto.graph.node if n.name == name)
        assert conv.input[1] not in produced_by or produced_by[conv.input[1]].op_type != "DequantizeLinear"
    expected = torch.sigmoid(torch.from_numpy(torch_logits(model, windows[32:]))).numpy()
    for runtime in ("onnxruntime", "openvino"):
        got = torch.sigmoid(ExportedModel(out, runtime, "int8", threads=2)(normalise(torch.from_numpy(windows[32:]))))
        assert np.abs(got.numpy() - expected).mean() < 0.01, runtime


def test_the_shipped_int8_export_comes_from_the_shipped_checkpoint():
    path = int8_export_path(SHIPPED_MODEL)
    recipe = read_recipe(path)
    assert recipe["onnx"]["precision"] == "int8"
    assert recipe["onnx"]["source_sha256"] == sha256_file(SHIPPED_MODEL)
    calibration = recipe["onnx"]["calibration"]
    manifest = (REPO / "results/idrid-ma-best/data/splits/manifest.csv").read_text().splitlines()
    val = {line.split(",")[1] for line in manifest[1:] if line.split(",")[3] == "val"}
    assert calibration["windows"] > 100 and not val & set(calibration["stems"])  # never calibrated on val images


def test_a_checkpoint_runs_through_its_cached_export_and_a_stale_int8_export_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROPATCH_CACHE", str(tmp_path / "cache"))
    checkpoint = tiny_checkpoint(tmp_path)
    model, config = load_model(checkpoint, "onnxruntime", "fp32")
    assert isinstance(model, ExportedModel) and len(list((tmp_path / "cache/models/onnx").glob("*.onnx"))) == 1
    with pytest.raises(InputError, match="no int8 export beside it"):
        load_model(checkpoint, "openvino", "int8")
    shutil.copy(int8_export_path(SHIPPED_MODEL), int8_export_path(checkpoint))
    with pytest.raises(InputError, match="exported from another checkpoint"):
        load_model(checkpoint, "openvino", "int8")


def test_bad_exports_and_settings_are_refused_clearly(shipped_fp32, tmp_path):
    model, _, path = shipped_fp32
    with pytest.raises(InputError, match="runs on onnxruntime or openvino"):
        load_model(path, "torch", "fp32")
    with pytest.raises(InputError, match="an fp32 export, asked to run as int8"):
        load_model(path, "onnxruntime", "int8")
    with pytest.raises(ValueError, match="bf16. does not run on onnxruntime"):
        load_model(path, "onnxruntime", "bf16")
    plain = tmp_path / "plain.onnx"
    proto = onnx.load_model(str(path))
    del proto.metadata_props[:]
    onnx.save_model(proto, str(plain))
    with pytest.raises(InputError, match="without a micropatch recipe"):
        read_recipe(plain)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a readable ONNX file"):
        read_recipe(tmp_path / "junk.onnx")
    with pytest.raises(ValueError, match="needs the model loaded for it"):
        predict_probability(model, np.zeros((128, 128), np.uint8), np.ones((128, 128), bool),
                            DEFAULTS | {"runtime": "openvino"})
    import openvino as ov

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        with pytest.raises(InputError, match="bf16 needs a CPU with bf16"):
            ExportedModel(path, "openvino", "bf16")


def test_export_command_writes_int8_beside_the_checkpoint(tmp_path, synthetic_idrid):
    from micropatch.cli import main as cli

    checkpoint = tiny_checkpoint(tmp_path)
    photos = sorted((synthetic_idrid / "A. Segmentation/1. Original Images/a. Training Set").glob("*.jpg"))
    assert cli(["export", str(checkpoint)]) == 0
    assert read_recipe(checkpoint.with_suffix(".onnx"))["onnx"]["precision"] == "fp32"
    assert cli(["export", str(checkpoint), "--precision", "int8"]) == 2  # no calibration photographs: refused
    assert not int8_export_path(checkpoint).exists()
    assert cli(["export", str(checkpoint), "--precision", "int8", "--calibration", *map(str, photos)]) == 0
    recipe = read_recipe(int8_export_path(checkpoint))
    assert recipe["onnx"]["calibration"]["images"] == len(photos) and recipe["onnx"]["precision"] == "int8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-int8.onnx", "tiny.onnx", "tiny.safetensors"]
    assert json.loads(json.dumps(recipe))["lesions"] == ["MA"]
