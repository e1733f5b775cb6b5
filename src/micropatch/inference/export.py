"""The ONNX export of a micropatch model (its recipe in the metadata) and its int8
quantization, calibrated on training photographs."""
from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from micropatch.core.fileio import InputError, atomic_path, read_fundus
from micropatch.core.recipe import METADATA_KEY, set_recipe
from micropatch.data.preprocessing import checked_fov, green_clahe
from micropatch.inference.windows import calibration_batch

OPSET = 18


INPUT, OUTPUT = "input", "logits"




# Calibration of an int8 export: this many first-pass windows from each photograph, spread evenly over its FOV.
CALIBRATION_PER_IMAGE = 8


def export_onnx(model: torch.nn.Module, config: dict, path: Path, source_sha256: str) -> Path:
    """Write the float32 ONNX graph of a micropatch model, its recipe in the metadata; returns path."""
    import onnx

    for name in ("onnx_ir", "onnxscript"):  # their per-pass INFO lines would bury the stage's own log
        logging.getLogger(name).setLevel(logging.WARNING)
    model = model.cpu().eval()
    window = config.get("inference", {}).get("window", 128)
    example = torch.zeros(2, 1, window, window)
    dims = {0: torch.export.Dim("batch", min=1), 2: 32 * torch.export.Dim("rows", min=1, max=512),
            3: 32 * torch.export.Dim("columns", min=1, max=512)}
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                    dynamic_shapes=(dims,), opset_version=OPSET, external_data=False,
                                    verbose=False)
        proto = program.model_proto
        set_recipe(proto, config | {"onnx": {"precision": "fp32", "source_sha256": source_sha256,
                                             "opset": OPSET, "torch": torch.__version__}})
        onnx.save_model(proto, str(tmp))
    return path






def outer_convolutions(proto) -> list[str]:
    """Names of the Conv node that reads the graph input (the stem) and of the one that writes the output (the
    segmentation head): the layers left float32 by the int8 export."""
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    stem = [n.name for n in convs if INPUT in n.input]
    head = [n.name for n in convs if OUTPUT in n.output]
    if len(stem) != 1 or len(head) != 1:
        raise RuntimeError(f"the exported graph's stem and head convolutions were not found ({stem}, {head}): "
                           "the exporter changed its graph; export fp32 instead")
    return stem + head


def quantize_int8(fp32_path: Path, int8_path: Path, windows: np.ndarray, calibration: dict) -> Path:
    """int8 QDQ copy of an fp32 export. windows: normalised float32 (N, 1, h, w) calibration input."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Windows(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(windows[k:k + 16] for k in range(0, len(windows), 16))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT: np.ascontiguousarray(batch, np.float32)}


    from onnxruntime.quantization.shape_inference import quant_pre_process

    proto = onnx.load_model(str(fp32_path))
    recipe = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryDirectory() as work, atomic_path(int8_path) as tmp:
        # BatchNorm folded into its convolution first, as ORT's quantization tool recommends: fewer tensors to
        # quantize, and the ranges are those of what runs
        folded = Path(work) / "folded.onnx"
        root.setLevel(logging.ERROR)  # the quantizer logs its advice through the root logger
        try:
            quant_pre_process(str(fp32_path), str(folded), skip_symbolic_shape=True)
            quantize_static(str(folded), str(tmp), Windows(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_exclude=outer_convolutions(onnx.load_model(str(folded))))
        finally:
            root.setLevel(level)
        quantized = onnx.load_model(str(tmp))
        set_recipe(quantized, recipe | {"onnx": recipe["onnx"] | {"precision": "int8", "calibration": calibration}})
        onnx.save_model(quantized, str(tmp))
    return int8_path


def calibration_windows(images: list[Path], config: dict, per_image: int = CALIBRATION_PER_IMAGE) -> np.ndarray:
    """Normalised float32 (N, 1, window, window) int8 calibration input: per_image first-pass windows of each
    photograph (preprocessed by the model's recipe), spread evenly over its FOV."""
    if not images:
        raise InputError("int8 export needs --calibration: training photographs of the kind the model will see "
                         "(20 or more), never the images to be predicted")
    preprocess, infer = config["preprocess"], config["inference"]
    batches = []
    for path in images:
        rgb = read_fundus(path)
        fov = checked_fov(rgb, preprocess["fov_threshold"], path)
        enhanced = green_clahe(rgb, preprocess["clahe_clip_limit"], preprocess["clahe_grid"])
        batches.append(calibration_batch(enhanced, fov, infer["window"], infer["stride"], per_image).numpy())
    return np.concatenate(batches)
