"""One image's probability maps by the inference settings: mode, runtime, precision,
TTA, the FOV rescaling and the model's working scale; a study_baseline model's square
frame."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from micropatch.core.recipe import AUTO_RESCALE_TOLERANCE, INFER_DEFAULTS, RESCALE_CHOICES
from micropatch.data.preprocessing import fov_diameter
from micropatch.data.square import square_frame, to_native, to_square
from micropatch.inference.runtimes import ExportedModel, check_runtime
from micropatch.inference.windows import (
    FlipAverage,
    calibration_batch,
    int8_copy,
    refined_probability,
    sliding_window_probability,
)
from micropatch.training.network import Autocast

MODES = ("paper", "fast")


TTAS = ("none", "flips")


# For a checkpoint whose file carries no recipe (written before recipes existed): the method's 128/64 windows.
# Not the model's to carry: the runtime (torch unless params.yaml `infer` or `micropatch predict` says otherwise),
# and fast mode's first pass (one tiling of windows; predict uses two, the second where the first saw a trace:
# docs/how-to/runtimes.md).
DEFAULTS = INFER_DEFAULTS | {"window": 128, "stride": 64, "runtime": "torch", "first_pass_tilings": 1,
                             "shifted_evidence": 0.0}


def fov_scale(fov: np.ndarray, params: dict) -> tuple[int, float]:
    """(FOV diameter px, scale): the factor predict_probability resamples an image by before its windows run (1.0:
    none), by params' rescale_fov (False, True, or "auto": only beyond AUTO_RESCALE_TOLERANCE) and fov_diameter
    (the training images' median, which the model carries)."""
    setting = params.get("rescale_fov", False)
    if setting not in RESCALE_CHOICES:
        raise ValueError(f"infer.rescale_fov {setting!r}: choose one of {RESCALE_CHOICES}")
    diameter = fov_diameter(fov)
    if setting is False or not diameter:
        return diameter, 1.0
    target = params.get("fov_diameter")
    if not target:
        if setting == "auto":  # a model written before rescaling existed: nothing to rescale to
            return diameter, 1.0
        raise ValueError("infer.rescale_fov needs the training images' FOV diameter, which this model does not "
                         "carry (it was written before rescaling existed): set rescale_fov false")
    scale = target / diameter
    tolerance = AUTO_RESCALE_TOLERANCE if setting == "auto" else 0.01  # within 1 %, resampling would only blur
    return diameter, 1.0 if abs(diameter / target - 1) <= tolerance else scale


def rescaled_probability(model: torch.nn.Module, image: np.ndarray, fov: np.ndarray, params: dict, scale: float,
                         device: str | torch.device = "cpu", progress=None) -> np.ndarray:
    """predict_probability on the image resampled by `scale` (fov_scale: its FOV diameter becomes the training
    images'), the maps resampled back to the native frame (bilinear)."""
    height, width = image.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resampled = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    resampled_fov = cv2.resize(fov.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    probability = predict_probability(model, resampled, resampled_fov, params | {"rescale_fov": False, "scale": 1.0},
                                      device, progress)
    back = np.stack([cv2.resize(channel, (width, height), interpolation=cv2.INTER_LINEAR) for channel in probability])
    return np.where(fov, np.clip(back, 0, 1), 0.0).astype(np.float32)


def predict_probability(model: torch.nn.Module, image: np.ndarray, fov: np.ndarray, params: dict,
                        device: str | torch.device = "cpu", progress=None) -> np.ndarray:
    """(L, H, W) probabilities, 0 outside the FOV, by params `infer`: mode paper or fast (which reads
    refine_threshold, first_pass_tilings and shifted_evidence), runtime torch (precision fp32, bf16, or int8 on
    the CPU: a copy of the model quantized with ranges
    from calibration_windows of this image's own first-pass windows, so an image's maps never depend on which
    images came before it) or onnxruntime / openvino (model: a runtimes.ExportedModel loaded for that runtime and
    precision), tta none or flips, rescale_fov (fov_scale, rescaled_probability).

    progress: None, or a tqdm-like bar whose total grows by the windows planned and which is updated by those run.
    """
    # the photograph to the training images' frame (rescale_fov), then to the model's working scale (its recipe)
    scale = fov_scale(fov, params)[1] * params.get("scale", 1.0)
    if scale != 1.0:
        return rescaled_probability(model, image, fov, params, scale, device, progress)

    mode, precision = params.get("mode", "paper"), params.get("precision", "fp32")
    tta, runtime = params.get("tta", "none"), params.get("runtime", "torch")
    if tta not in TTAS:
        raise ValueError(f"infer.tta '{tta}': choose one of {TTAS}")
    if mode not in MODES:
        raise ValueError(f"infer.mode '{mode}': choose one of {MODES}")
    check_runtime(runtime, precision)
    if runtime != "torch":  # the exported model was built for its runtime and precision once, before the images
        if not (isinstance(model, ExportedModel) and (model.runtime, model.precision) == (runtime, precision)):
            raise ValueError(f"infer.runtime {runtime} / {precision} needs the model loaded for it "
                             "(micropatch.runtimes.load_model), not a torch module")
    elif precision == "int8":
        if torch.device(device).type != "cpu":
            raise ValueError(f"infer.precision int8 runs on the CPU only, not on {device}: use fp32 there "
                             "(autocast to fp16 applies on CUDA)")
        model = int8_copy(model, calibration_batch(image, fov, params["window"], params["stride"],
                                                   params["calibration_windows"]))
    elif precision == "bf16":
        model = Autocast(model, "bf16")
    if tta == "flips":
        model = FlipAverage(model)
    if mode == "paper":
        probability = sliding_window_probability(model, image, params["window"], params["stride"],
                                                 params["batch_size"], device, progress)
    else:
        probability = refined_probability(model, image, fov, params["window"], params["stride"],
                                          params["refine_threshold"], params["batch_size"], device,
                                          params.get("first_pass_tilings", 1), params.get("shifted_evidence", 0.0),
                                          progress)
    return np.where(fov, probability, 0.0).astype(np.float32)  # nothing outside the field of view is a lesion


def square_probability(model: torch.nn.Module, rgb: np.ndarray, fov: np.ndarray, config: dict, settings: dict,
                       device: str | torch.device = "cpu") -> np.ndarray:
    """(L, H, W) probabilities of a study_baseline model for an RGB photograph, 0 outside the FOV: the square
    frame's windows (the model's crop size, overlapping by half, mean blending), mapped back to the native frame."""
    if settings.get("runtime", "torch") != "torch" or settings.get("precision", "fp32") != "fp32":
        raise ValueError("recipe study_baseline runs on torch fp32 only (infer.runtime torch, infer.precision "
                         f"fp32), not {settings.get('runtime')} {settings.get('precision')}")
    frame = square_frame(fov, config["square"]["side"])
    square = sliding_window_probability(model, to_square(rgb, frame), settings["window"], settings["stride"],
                                        settings["batch_size"], device)
    return np.where(fov, np.clip(to_native(square, frame, fov.shape), 0, 1), 0.0).astype(np.float32)
