"""`micropatch predict`: lesion maps, masks, overlays and lesion lists for photographs or folders of them, a run
record and report.html (the work: micropatch.inference.predict)."""
from __future__ import annotations

from pathlib import Path

from micropatch.core.recipe import AUTO_RESCALE_TOLERANCE, PREDICT_DEFAULTS, RUNTIMES
from micropatch.inference import predict


def add_parser(sub) -> None:
    parser = sub.add_parser("predict", help="native-resolution lesion maps for fundus photographs (JPEG/PNG/TIFF), "
                                            "files or folders, with report.html")
    parser.add_argument("images", nargs="+", type=Path,
                        help="photographs, folders of them (JPEG, PNG, TIFF) or quoted glob patterns")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder (created); a folder's subfolders are mirrored in it (--recursive)")
    parser.add_argument("--recursive", action="store_true", help="also the photographs in the folders' subfolders")
    parser.add_argument("--model", help="a micropatch checkpoint file (.safetensors) or its ONNX export, or an https "
                                        "URL of one (with --model-sha256); default: the shipped model, "
                                        "models/idrid-ma/model.safetensors (its MODEL_CARD.md)")
    parser.add_argument("--model-sha256", help="the sha256 a --model URL must have; the file is kept in "
                                               "$MICROPATCH_CACHE (default ~/.cache/micropatch) and verified")
    parser.add_argument("--rescale-fov", choices=("auto", "on", "off"),
                        help="resample each photograph so that its field of view has the model's training diameter, "
                             "and the maps back: auto (default) when it differs by more than "
                             f"{int(AUTO_RESCALE_TOLERANCE * 100)} %%; the minimum component area is scaled with it")
    parser.add_argument("--threshold", type=predict.threshold_arg,
                        help="probability in [0, 1] that makes the masks (default: the model's operating point)")
    parser.add_argument("--min-area", type=predict.min_area_arg,
                        help="predicted components smaller than this many px (at the model's training scale) are "
                             "dropped; >= 0 (default: the model's operating point)")
    parser.add_argument("--overlay", choices=tuple(predict.OVERLAY_FORMATS), default="jpeg",
                        help=f"full-size overlay as JPEG (quality {predict.JPEG_QUALITY}, default) or PNG")
    parser.add_argument("--runtime", choices=RUNTIMES,
                        help="where the windows run (default: openvino, or torch for --compute reproducible); "
                             "onnxruntime and openvino run the model's ONNX export")
    parser.add_argument("--precision", choices=("fp32", "int8", "bf16"),
                        help="default: int8 when the model has its int8 export beside it (the shipped one does), else "
                             "fp32; torch int8 calibrates a copy on each image; bf16: openvino, on CPUs that have it")
    parser.add_argument("--compute", choices=("reproducible", "fast"),
                        help="torch only: reproducible (the pipeline's infer stage bytes on any x86-64 CPU from AVX2 "
                             "up; implies --runtime torch) or fast")
    parser.add_argument("--mode", choices=("paper", "fast"),
                        help="paper: the model's 128/64 windows, every one; fast (default): the same windows, the "
                             "overlapping ones only near candidates, so masks at the operating point are paper's")
    parser.add_argument("--first-pass-tilings", type=int, choices=(1, 2),
                        help="fast mode: windows tiling the photograph once or twice (shifted by half a window) before "
                             "refining near candidates; 1 misses lesions on window borders (default 2)")
    parser.add_argument("--shifted-evidence", type=float,
                        help="fast mode, 2 tilings: run a shifted window only where the first tiling's maps reach this "
                             f"probability in it; 0: all of them (default {PREDICT_DEFAULTS['shifted_evidence']})")
    parser.add_argument("--threads", type=int, help="CPU threads (default: all cores; torch reproducible: 2)")
    parser.add_argument("--clahe-clip-limit", type=float, help="default: the model's recipe")
    parser.add_argument("--clahe-grid", type=int, help="default: the model's recipe")
    parser.add_argument("--fov-threshold", type=int, help="default: the model's recipe")
    parser.add_argument("--tta", choices=("none", "flips"), help="flips: mean over 4 flips of each window, 4x the "
                                                                  "compute (default: the model's recipe)")
    parser.set_defaults(func=run)


def run(args) -> int:
    """One JSON summary line per photograph on stdout; exit 2 when any photograph was refused."""
    return predict.run(args)
