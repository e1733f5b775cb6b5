"""Full-image inference over the native image: `paper` (128/64 windows, mean blending) and `fast` (large tiles)."""
from __future__ import annotations

import numpy as np
import torch

from .model import normalise
from .patches import window_starts

MODES = ("paper", "fast")
DEFAULTS = {"mode": "paper", "window": 128, "stride": 64, "batch_size": 32, "tile": 512, "tile_overlap": 64,
            "tile_batch_size": 2}  # params.yaml `infer`, for callers without one (micropatch predict)


def sliding_window_probability(model: torch.nn.Module, image: np.ndarray, window: int = 128, stride: int = 64,
                               batch_size: int = 32, device: str | torch.device = "cpu") -> np.ndarray:
    """Probability maps float32 (L, H, W) of a uint8 (H, W) image: sigmoid per window, overlaps averaged."""
    from monai.inferers import sliding_window_inference

    if not 0 < stride <= window:
        raise ValueError(f"stride {stride} must be in 1..window ({window})")
    device = torch.device(device)
    model = model.to(device).eval()

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        batch = normalise(batch).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            return torch.sigmoid(model(batch).float())

    # float64 accumulator: a sum of 1-4 float32 window outputs divided by its count is then exact
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float64))[None, None].to(device)
    with torch.inference_mode():
        probability = sliding_window_inference(
            tensor, roi_size=(window, window), sw_batch_size=batch_size, predictor=predictor,
            overlap=1 - stride / window, mode="constant", sw_device=device, device=torch.device("cpu"),
            progress=False)
    return probability[0].float().numpy()


def gaussian_weight(tile: int, sigma_fraction: float = 1 / 8) -> np.ndarray:
    """float32 (tile, tile) Gaussian blending weights (nnU-Net's: sigma = tile / 8), floored to stay positive."""
    axis = np.arange(tile, dtype=np.float64) - (tile - 1) / 2
    g = np.exp(-(axis**2) / (2 * (sigma_fraction * tile) ** 2))
    weight = np.outer(g, g)
    return np.maximum(weight / weight.max(), 1e-3).astype(np.float32)


def tiled_probability(model: torch.nn.Module, image: np.ndarray, fov: np.ndarray, tile: int = 1024,
                      overlap: int = 128, batch_size: int = 2, device: str | torch.device = "cpu") -> np.ndarray:
    """Probability maps float32 (L, H, W) from large tiles with Gaussian blending, skipping tiles outside the FOV.

    image: uint8 (H, W); fov: bool (H, W). Pixels that only skipped tiles cover lie outside the FOV and get 0.
    """
    if tile % 32 or not 0 <= overlap < tile:
        raise ValueError(f"tile {tile} must be a multiple of 32 (the U-Net's stride) and overlap in 0..tile-1")
    device = torch.device(device)
    model = model.to(device).eval()
    height, width = image.shape
    padded_h, padded_w = max(height, tile), max(width, tile)  # small images: pad to one tile
    padded = np.zeros((padded_h, padded_w), np.uint8)
    padded[:height, :width] = image
    inside = np.zeros((padded_h, padded_w), bool)
    inside[:height, :width] = fov
    boxes = [(y, x) for y in window_starts(padded_h, tile, tile - overlap)
             for x in window_starts(padded_w, tile, tile - overlap) if inside[y:y + tile, x:x + tile].any()]
    weight = gaussian_weight(tile)
    total, weights = None, np.zeros((padded_h, padded_w), np.float32)
    with torch.inference_mode():
        for i in range(0, len(boxes), batch_size):
            chunk = boxes[i:i + batch_size]
            batch = torch.from_numpy(np.stack([padded[y:y + tile, x:x + tile] for y, x in chunk])[:, None])
            batch = normalise(batch.to(device)).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                probability = torch.sigmoid(model(batch).float()).cpu().numpy()
            if total is None:
                total = np.zeros((probability.shape[1], padded_h, padded_w), np.float32)
            for (y, x), tile_probability in zip(chunk, probability):
                total[:, y:y + tile, x:x + tile] += tile_probability * weight
                weights[y:y + tile, x:x + tile] += weight
    if total is None:  # no FOV at all: nothing to predict
        n_out = model.segmentation_head[0].out_channels
        return np.zeros((n_out, height, width), np.float32)
    probability = np.divide(total, weights, out=np.zeros_like(total), where=weights > 0)
    return probability[:, :height, :width]


def predict_probability(model: torch.nn.Module, image: np.ndarray, fov: np.ndarray, params: dict,
                        device: str | torch.device = "cpu") -> np.ndarray:
    """(L, H, W) probabilities by params `infer` (mode paper: window/stride; mode fast: tile/tile_overlap)."""
    mode = params.get("mode", "paper")
    if mode == "paper":
        return sliding_window_probability(model, image, params["window"], params["stride"], params["batch_size"],
                                          device)
    if mode == "fast":
        return tiled_probability(model, image, fov, params["tile"], params["tile_overlap"],
                                 params["tile_batch_size"], device)
    raise ValueError(f"infer.mode '{mode}': choose one of {MODES}")


def to_uint8(probability: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> uint8 0..255 (p = value / 255, rounded to nearest)."""
    return np.round(np.clip(probability, 0.0, 1.0) * 255).astype(np.uint8)
