"""Full-image inference: sliding window over the native image, mean-blended probability maps."""
from __future__ import annotations

import numpy as np
import torch

from .model import normalise


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


def to_uint8(probability: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> uint8 0..255 (p = value / 255, rounded to nearest)."""
    return np.round(np.clip(probability, 0.0, 1.0) * 255).astype(np.uint8)
