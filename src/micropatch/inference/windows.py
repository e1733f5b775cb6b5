"""Windows over a native image: paper's sliding windows with mean blending, fast
mode's first tiling and refinement, int8 copies calibrated per image, flip TTA."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from micropatch.data.patches import window_sums
from micropatch.training.network import normalise


def sliding_window_probability(model: torch.nn.Module, image: np.ndarray, window: int = 128, stride: int = 64,
                               batch_size: int = 32, device: str | torch.device = "cpu", progress=None) -> np.ndarray:
    """Probability maps float32 (L, H, W) of a uint8 (H, W) image, or (H, W, C) for a model of C input channels:
    sigmoid per window, overlaps averaged. progress: as predict_probability's."""
    from monai.inferers import sliding_window_inference

    if not 0 < stride <= window:
        raise ValueError(f"stride {stride} must be in 1..window ({window})")
    device = torch.device(device)
    model = model.to(device, memory_format=torch.channels_last).eval()  # as its inputs: 1.5x faster

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        batch = normalise(batch).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            probability = torch.sigmoid(model(batch).float())
        if progress is not None:
            progress.update(len(batch))
        return probability

    # float64 accumulator: a sum of 1-4 float32 window outputs divided by its count is then exact
    channels = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    if progress is not None:  # MONAI's grid: the window starts of each axis, the last one flush with the edge
        rows, cols = (len(range(0, max(size - window, 0) + stride, stride)) for size in channels.shape[1:])
        plan(progress, rows * cols)
    tensor = torch.from_numpy(np.ascontiguousarray(channels, dtype=np.float64))[None].to(device)
    with torch.inference_mode():
        probability = sliding_window_inference(
            tensor, roi_size=(window, window), sw_batch_size=batch_size, predictor=predictor,
            overlap=1 - stride / window, mode="constant", sw_device=device, device=torch.device("cpu"),
            progress=False)
    return probability[0].float().numpy()


def int8_copy(model: torch.nn.Module, calibration: torch.Tensor) -> torch.nn.Module:
    """Post-training int8 copy of a float U-Net for x86 CPUs; calibration: normalised float32 (N, 1, h, w) input.

    FX graph-mode quantization with x86 kernels: per-channel int8 weights, activation ranges from histograms of the
    calibration windows. The stem conv and the segmentation head stay float32: they hold few of the FLOPs, and the
    1-channel input and the logits are where 8 bits flip the most thresholded pixels. torch.ao.quantization is
    deprecated upstream (its successor, pt2e, is fast only under torch.compile); the pinned torch ships it.
    """
    if "x86" not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"int8 inference needs torch's x86 quantized engine; this build has "
                           f"{torch.backends.quantized.supported_engines}: use infer.precision fp32")
    torch.backends.quantized.engine = "x86"
    qconfig = (get_default_qconfig_mapping("x86").set_module_name("encoder.conv1", None)
               .set_module_name("segmentation_head", None))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(deprecated|reduce_range).*")
        observed = prepare_fx(copy.deepcopy(model).cpu().eval(), qconfig, (calibration[:1],))
        with torch.no_grad():
            observed(calibration)
        return convert_fx(observed)


def covering_subset(n_windows: int, step: int) -> np.ndarray:
    """bool (n_windows,): every `step`-th window of one axis plus the last, which together cover the axis once."""
    chosen = np.zeros(n_windows, bool)
    chosen[::step] = True
    chosen[-1] = True
    return chosen


def pad_to_window(image: np.ndarray, fov: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(image, fov) zero-padded evenly to at least window x window, as MONAI pads; returns them and (top, left)."""
    height, width = image.shape
    padded_h, padded_w = max(height, window), max(width, window)
    top, left = (padded_h - height) // 2, (padded_w - width) // 2
    padded = np.zeros((padded_h, padded_w), np.uint8)
    padded[top:top + height, left:left + width] = image
    inside = np.zeros((padded_h, padded_w), bool)
    inside[top:top + height, left:left + width] = fov
    return padded, inside, top, left


def first_pass(inside: np.ndarray, window: int, stride: int,
               tilings: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ys, xs, first, shifted), the last two bool (len(ys), len(xs)): `first`, the grid windows that tile a padded
    frame once and touch its FOV; `shifted` (tilings 2; else none), those of the tiling shifted by half a window in
    both directions that touch it, so that a lesion on one tiling's window border (where a 128 px window barely sees
    it) lies well inside a window of the other in at least one direction."""
    ys, xs, fov_counts = window_sums(inside, window, stride)
    step = max(1, window // stride)
    first = np.outer(covering_subset(len(ys), step), covering_subset(len(xs), step)) & (fov_counts > 0)
    shifted = np.zeros_like(first)
    if tilings == 2 and step > 1:
        shifted[step // 2::step, step // 2::step] = True
        shifted &= (fov_counts > 0) & ~first
    elif tilings not in (1, 2):
        raise ValueError(f"infer.first_pass_tilings {tilings}: 1 or 2")
    return ys, xs, first, shifted


def calibration_batch(image: np.ndarray, fov: np.ndarray, window: int, stride: int, n_windows: int) -> torch.Tensor:
    """Normalised float32 (<= n_windows, 1, window, window): first-pass windows spread evenly in raster order."""
    padded, inside, _, _ = pad_to_window(image, fov, window)
    ys, xs, chosen, _ = first_pass(inside, window, stride)
    if not chosen.any():  # no FOV: any windows will do, none of them is blended into a lesion map
        chosen = np.ones((len(ys), len(xs)), bool)
    boxes = [(ys[i], xs[j]) for i, j in zip(*np.nonzero(chosen))]
    picks = np.unique(np.linspace(0, len(boxes) - 1, n_windows).round().astype(int))
    windows = np.stack([padded[boxes[k][0]:boxes[k][0] + window, boxes[k][1]:boxes[k][1] + window] for k in picks])
    return normalise(torch.from_numpy(windows)[:, None])


def plan(progress, windows: int) -> None:
    """Grow a progress bar's total by windows about to run."""
    progress.total = (progress.total or 0) + int(windows)
    progress.refresh()


def accumulate_windows(model: torch.nn.Module, image: np.ndarray, boxes: list[tuple[int, int]], window: int,
                       batch_size: int, device: torch.device, total: np.ndarray | None = None,
                       count: np.ndarray | None = None, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Add the sigmoid maps of the windows starting at `boxes` (y, x px) of a uint8 (H, W) image to the sums.

    Returns (total float64 (L, H, W), count int32 (H, W)): float64 sums of float32 outputs, divided by the count
    later, are paper's arithmetic (MONAI accumulates the same way).
    """
    with torch.inference_mode():
        for k in range(0, len(boxes), batch_size):
            chunk = boxes[k:k + batch_size]
            batch = torch.from_numpy(np.stack([image[y:y + window, x:x + window] for y, x in chunk])[:, None])
            batch = normalise(batch.to(device)).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                probability = torch.sigmoid(model(batch).float()).cpu().numpy()
            if total is None:
                total = np.zeros((probability.shape[1], *image.shape), np.float64)
                count = np.zeros(image.shape, np.int32)
            for (y, x), window_probability in zip(chunk, probability):
                total[:, y:y + window, x:x + window] += window_probability
                count[y:y + window, x:x + window] += 1
            if progress is not None:
                progress.update(len(chunk))
    return total, count


def refined_probability(model: torch.nn.Module, image: np.ndarray, fov: np.ndarray, window: int = 128,
                        stride: int = 64, refine_threshold: float = 0.15, batch_size: int = 32,
                        device: str | torch.device = "cpu", tilings: int = 1,
                        shifted_evidence: float = 0.0, progress=None) -> np.ndarray:
    """Probability maps float32 (L, H, W) from paper's windows, the overlapping ones run only near candidates.

    image: uint8 (H, W); fov: bool (H, W). First the paper grid's windows that tile the image once and touch the
    FOV (with tilings 2, also the shifted tiling's: all of them, or with shifted_evidence > 0 only those where the
    first tiling's maps reach shifted_evidence somewhere, after it); then, until nothing changes, every further
    paper window holding a FOV pixel whose current mean is at least `refine_threshold`. A pixel at or above the
    threshold therefore has all its windows averaged, as in `paper`: every pixel `fast` marks at 0.5 is one `paper`
    marks. Pixels no run window covers (outside the FOV) get 0.
    """
    if not 0 < stride <= window or window % stride:
        raise ValueError(f"fast mode needs a stride ({stride}) that divides the window ({window})")
    if not 0 < refine_threshold <= 0.5:
        raise ValueError(f"refine_threshold {refine_threshold} must be in (0, 0.5]: above 0.5, marked pixels "
                         "could miss windows")
    if not 0 <= shifted_evidence < refine_threshold:
        raise ValueError(f"shifted_evidence {shifted_evidence} must be in [0, refine_threshold {refine_threshold}): "
                         "at or above it, refinement already runs those windows")
    device = torch.device(device)
    model = model.to(device, memory_format=torch.channels_last).eval()  # as its inputs: 1.5x faster
    height, width = image.shape
    padded, inside, top, left = pad_to_window(image, fov, window)
    ys, xs, todo, shifted = first_pass(inside, window, stride, tilings)
    if not shifted_evidence:
        todo, shifted = todo | shifted, np.zeros_like(shifted)
    done = np.zeros_like(todo)
    total = count = None
    while todo.any():
        boxes = [(ys[i], xs[j]) for i, j in zip(*np.nonzero(todo))]
        if progress is not None:
            plan(progress, len(boxes))
        total, count = accumulate_windows(model, padded, boxes, window, batch_size, device, total, count, progress)
        done |= todo
        mean = total / np.maximum(count, 1)  # 0 where no window ran: total is 0 there
        candidates = (mean >= refine_threshold).any(axis=0) & inside
        todo = (window_sums(candidates, window, stride)[2] > 0) & ~done
        if shifted.any():  # once, after the first tiling: a lesion it barely saw on a border leaves a trace there
            strongest = mean.max(axis=0)
            for i, j in zip(*np.nonzero(shifted & ~done)):
                todo[i, j] |= strongest[ys[i]:ys[i] + window, xs[j]:xs[j] + window].max() >= shifted_evidence
            shifted[:] = False
    if total is None:  # no FOV at all: nothing to predict; one window only tells how many lesion maps to return
        total, _ = accumulate_windows(model, padded, [(0, 0)], window, 1, device)
        return np.zeros((total.shape[0], height, width), np.float32)
    return mean[:, top:top + height, left:left + width].astype(np.float32)


class FlipAverage(torch.nn.Module):
    """Test-time augmentation: the logit of the mean probability over a window's 4 flips (none, left-right,
    up-down, both), each mapped back before averaging."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        total = 0
        for dims in ((), (3,), (2,), (2, 3)):
            flipped = torch.flip(batch, dims) if dims else batch
            logits = self.model(flipped).float()
            total = total + torch.sigmoid(torch.flip(logits, dims) if dims else logits)
        return torch.logit(total / 4, eps=1e-7)
