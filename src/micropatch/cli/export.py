"""`micropatch export`: a checkpoint's ONNX export (fp32, or int8 calibrated on training photographs), its recipe
in the metadata."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from micropatch.core import compute
from micropatch.core.fileio import InputError, sha256_file


def add_parser(sub) -> None:
    parser = sub.add_parser("export", help="write a checkpoint as ONNX (recipe in its metadata) for "
                                           "onnxruntime / openvino")
    parser.add_argument("model", type=Path, help="a micropatch checkpoint (.safetensors)")
    parser.add_argument("--format", choices=("onnx",), default="onnx")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32")
    parser.add_argument("--calibration", nargs="+", type=Path, default=[],
                        help="int8: training photographs (not the ones to predict) whose windows set activation ranges")
    parser.add_argument("--per-image", type=int, help="int8: calibration windows per photograph (default: "
                                                      "runtimes.CALIBRATION_PER_IMAGE)")
    parser.add_argument("--out", type=Path, help="default: beside the checkpoint, <stem>.onnx or <stem>-int8.onnx "
                                                 "(where predict looks for the int8 export)")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Write the export; the compute mode is pinned first, so torch-land code is imported after it."""
    compute.configure("fast")
    from micropatch.core.recipe import int8_export_path, model_recipe
    from micropatch.inference.export import CALIBRATION_PER_IMAGE, calibration_windows, export_onnx, quantize_int8
    from micropatch.training.network import load_checkpoint

    model, config = load_checkpoint(args.model)
    if model_recipe(config) != "micropatch":
        raise InputError(f"{args.model}: recipe {model_recipe(config)} runs on torch fp32 only "
                         "(docs/explanation/recipes.md); "
                         "micropatch export writes micro-patching models")
    sha256 = sha256_file(args.model)
    out = args.out or (int8_export_path(args.model) if args.precision == "int8" else args.model.with_suffix(".onnx"))
    if args.precision == "fp32":
        export_onnx(model, config, out, sha256)
    else:
        windows = calibration_windows(args.calibration, config, args.per_image or CALIBRATION_PER_IMAGE)
        with tempfile.TemporaryDirectory() as work:
            fp32 = export_onnx(model, config, Path(work) / "fp32.onnx", sha256)
            quantize_int8(fp32, out, windows, {"images": len(args.calibration), "windows": len(windows),
                                               "method": "minmax", "stems": sorted(p.stem for p in args.calibration)})
    logging.info("export: %s (%s, from %s)", out, args.precision, args.model)
    return 0
