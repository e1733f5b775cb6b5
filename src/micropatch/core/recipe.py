"""The recipe a model carries in its file (like nnU-Net's plans): how to preprocess, window and normalise an image
for it, written by the train stage and read by the infer stage and `micropatch predict`, so prediction cannot
drift from training. A setting the user gives explicitly wins over the recipe, and is logged."""
from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

from micropatch.core.fileio import InputError

log = logging.getLogger(__name__)

# Inference settings that are not the model's to decide (the method's defaults; params.yaml `infer` sets them for
# the pipeline). window and stride come from the recipe: the patch size the model was trained on.
# tta: none, or flips (the mean probability over the 4 flips of each window, 4x the compute); rescale_fov: resample
# each image so that its FOV diameter is the training images' (the recipe's fov_diameter), predict, and resample
# the maps back to the native frame, where they are scored.
INFER_DEFAULTS = {"mode": "paper", "precision": "fp32", "batch_size": 32, "refine_threshold": 0.15,
                  "calibration_windows": 32, "tta": "none", "rescale_fov": False}
PREPROCESS_KEYS = ("clahe_clip_limit", "clahe_grid", "fov_threshold")
# rescale_fov "auto" (`micropatch predict`'s default): a photograph is resampled only when its FOV diameter differs
# from the training images' by more than this share. Chosen on benchmarks/camera_shift.py's tune images
# (docs/how-to/predict.md): within it, resampling costs more (blur) than the size difference does.
AUTO_RESCALE_TOLERANCE = 0.10
RESCALE_CHOICES = (False, True, "auto")


def training_recipe(preprocess: dict, patchify: dict, normalisation: dict, compute: dict,
                    manifest_sha256: str, study_baseline: dict | None = None) -> dict:
    """What train writes into the checkpoint's metadata besides the architecture.

    study_baseline: params.yaml's section, for a model of that recipe (square.py): its windows are its crops,
    overlapping by half, on the square frame of `side`. A micro-patching model's file names no recipe."""
    if study_baseline is None:
        # scale: the working scale of patches and windows (patchify.scale), only where it is not the method's 1
        scale = {} if patchify.get("scale", 1.0) == 1.0 else {"scale": patchify["scale"]}
        return {"preprocess": {k: preprocess[k] for k in PREPROCESS_KEYS},
                "inference": INFER_DEFAULTS | {"window": patchify["size"], "stride": patchify["stride"]} | scale,
                "normalisation": normalisation, "compute": compute, "train_manifest_sha256": manifest_sha256}
    crop = study_baseline["patch"]
    return (training_recipe(preprocess, {"size": crop, "stride": crop // 2}, normalisation, compute, manifest_sha256)
            | {"recipe": "study_baseline", "square": {"side": study_baseline["side"]}})


# A safetensors file opens with an 8-byte little-endian header length and a JSON header of that many bytes; real
# headers are a few kB (one entry per tensor), so anything claiming more is not one (random bytes, a pickle).
MAX_SAFETENSORS_HEADER = 64 << 20


def checkpoint_config(path: Path) -> dict:
    """The config a micropatch checkpoint carries in its metadata, weights left unread and torch not imported
    (predict checks the file and pins the compute mode before loading it): the safetensors header, read as JSON.

    InputError, naming the file, for anything that is not a safetensors file with a micropatch config: a pickle
    (.pt), random bytes or a truncated file is refused here, before a byte of it is interpreted as weights.
    """
    path = Path(path)
    refusal = (f"not a safetensors file: {path} (micropatch runs its own .safetensors checkpoints and their ONNX "
               "exports; a .pt/.pth pickle is never loaded)")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
            if not 2 <= length <= min(MAX_SAFETENSORS_HEADER, size - 8):
                raise InputError(refusal)
            header = json.loads(f.read(length))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(refusal) from None
    except IsADirectoryError:
        raise InputError(f"{path}: a folder, not a model file; give the .safetensors file inside it") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read the model file ({err.strerror}); check the path") from None
    if not isinstance(header, dict):
        raise InputError(refusal)
    metadata = header.get("__metadata__") or {}
    if "micropatch" not in metadata:
        raise InputError(f"{path}: a safetensors file without a micropatch config in its metadata; only models "
                         "written by micropatch (train, ship) can be run")
    try:
        return json.loads(metadata["micropatch"])
    except json.JSONDecodeError:
        raise InputError(f"{path}: its micropatch config is not valid JSON; the file is corrupt") from None


# How images become training data and maps (docs/explanation/recipes.md): the method, or the cross-dataset study's
# baseline.
RECIPES = ("micropatch", "study_baseline")


def model_recipe(config: dict) -> str:
    """The recipe a params.yaml or a model file's config names (one of RECIPES): none named is micro-patching's; an
    unknown name is refused, never read as micro-patching."""
    recipe = config.get("recipe", "micropatch")
    if recipe not in RECIPES:
        raise ValueError(f"recipe '{recipe}': choose one of {RECIPES}")
    return recipe


def resolve(config: dict, section: str, explicit: dict, defaults: dict) -> dict:
    """A recipe section (`preprocess` or `inference`) with the explicitly given keys on top, each override logged.

    defaults fill keys that a model written before recipes existed does not carry.
    """
    settings = defaults | config.get(section, {})
    for key, value in explicit.items():
        if value is not None and key in settings and settings[key] != value:
            log.info("%s.%s: using %r as given, not the model's %r", section, key, value, settings[key])
    return settings | {k: v for k, v in explicit.items() if v is not None}

# Where a model's windows run (micropatch.runtimes), and the precisions each runtime has.
RUNTIME_PRECISIONS = {"torch": ("fp32", "int8", "bf16"), "onnxruntime": ("fp32", "int8"),
                      "openvino": ("fp32", "int8", "bf16")}
RUNTIMES = tuple(RUNTIME_PRECISIONS)
# `micropatch predict`'s defaults: the fastest setting measured within the accuracy limits on the real val images
# (docs/how-to/runtimes.md). Fast mode's first pass as two tilings: with one, lesions on its window borders are missed.
# The shifted tiling's windows run only where the first tiling's maps reach shifted_evidence: 0.003 is the largest
# of 0.002 / 0.003 / 0.005 / 0.01 whose pooled Dice stayed within 0.001 of both tilings in full on the record's 6
# tune images (not its val images); it runs 35 % fewer windows than both in full there.
PREDICT_DEFAULTS = {"runtime": "openvino", "precision": "int8", "mode": "fast", "first_pass_tilings": 2,
                    "shifted_evidence": 0.003, "rescale_fov": "auto"}


def int8_export_path(checkpoint: Path) -> Path:
    """Where a checkpoint's int8 ONNX export lives: beside it, <stem>-int8.onnx (the shipped model has one)."""
    return checkpoint.with_name(f"{checkpoint.stem}-int8.onnx")


def predict_setting(model: Path, runtime: str | None, precision: str | None,
                    compute: str | None) -> tuple[str, str | None]:
    """(runtime, precision) for `micropatch predict`: what the user gave, else PREDICT_DEFAULTS where the model has
    what they need (int8: the export beside the checkpoint), logged. precision None: an .onnx file's own."""
    if compute == "reproducible":
        if runtime not in (None, "torch"):
            raise ValueError(f"--compute reproducible pins torch's kernels; {runtime} picks its own: drop one")
        runtime = "torch"
    if model.suffix != ".onnx" and model.is_file() and model_recipe(checkpoint_config(model)) == "study_baseline":
        if runtime not in (None, "torch") or precision not in (None, "fp32"):
            raise ValueError(f"{model}: a study_baseline model runs on torch fp32 only, not {runtime} {precision}")
        return "torch", "fp32"
    runtime = runtime or PREDICT_DEFAULTS["runtime"]
    if precision is None and runtime != "torch" and model.suffix != ".onnx":
        precision = PREDICT_DEFAULTS["precision"] if int8_export_path(model).is_file() else "fp32"
        if precision == "fp32":
            log.info("%s has no int8 export beside it (%s): running fp32 (write one with `micropatch export "
                     "--precision int8`)", model, int8_export_path(model).name)
    return runtime, precision or ("fp32" if runtime == "torch" else None)


# An ONNX export carries the recipe JSON in its metadata under this key (micropatch export).
METADATA_KEY = "micropatch"


def set_recipe(proto, config: dict) -> None:
    """Put the recipe JSON into an ONNX ModelProto's metadata (replacing any earlier one)."""
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(config, sort_keys=True)


def read_recipe(path: Path) -> dict:
    """The recipe of an exported model; InputError for a file that is not a micropatch ONNX export."""
    import onnx  # here, not at the top: reading a checkpoint's recipe needs no ONNX

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: ONNX model not found; write one with `micropatch export CHECKPOINT --out {path}`")
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as err:
        raise InputError(f"{path}: not a readable ONNX file ({err.__class__.__name__}); export it again with "
                         "`micropatch export`") from err
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in props:
        raise InputError(f"{path}: an ONNX file without a micropatch recipe in its metadata; only files written by "
                         "`micropatch export` can be run (they say which lesions, preprocessing and windows)")
    return json.loads(props[METADATA_KEY])
