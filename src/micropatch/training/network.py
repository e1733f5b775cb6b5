"""The U-Net (ResNet34 encoder, scSE decoder attention), offline ImageNet weights, safe checkpoint loading."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from micropatch.core.fileio import InputError, atomic_path

# Single-channel input: the mean/std of ImageNet's RGB statistics, matching encoder weights summed over RGB.
INPUT_MEAN, INPUT_STD = 0.449, 0.226
# torchvision's release file names for ResNet34 ImageNet weights, as they land in the torch hub cache.
TORCH_CACHE_FILES = {"resnet34": ("resnet34-b627a593.pth", "resnet34-333f7ec4.pth")}


def build_model(n_classes: int, encoder: str = "resnet34", encoder_weights: str | None = None,
                attention: str | None = "scse", in_channels: int = 1) -> torch.nn.Module:
    """smp Unet with n_classes logit maps and 1 input channel (the micro-patching recipe's enhanced green), or 3
    (RGB: recipe study_baseline); ImageNet weights only from a local cache."""
    import segmentation_models_pytorch as smp

    if encoder_weights not in (None, "imagenet"):
        raise ValueError(f"encoder_weights must be null or 'imagenet', got {encoder_weights!r}")
    model = smp.Unet(encoder, encoder_weights=None, in_channels=3, classes=n_classes,
                     decoder_attention_type=attention)
    if encoder_weights == "imagenet":
        state = load_cached_imagenet(encoder)
        model.encoder.load_state_dict(state)
    if in_channels != 3:
        model.encoder.set_in_channels(in_channels, pretrained=encoder_weights is not None)  # sums conv1 over RGB
    return model


def load_cached_imagenet(encoder: str) -> dict[str, torch.Tensor]:
    """ImageNet encoder weights from the local torch hub cache; never touches the network."""
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    names = TORCH_CACHE_FILES.get(encoder, ())
    for name in names:
        path = hub / name
        if path.is_file():
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            check_finite(state, path)
            return state
    raise InputError(
        f"encoder_weights: imagenet asks for cached {encoder} weights, but none of {list(names)} is in {hub} "
        f"(TORCH_HOME={os.environ.get('TORCH_HOME', 'unset')}). micropatch never downloads at run time: copy "
        "torchvision's resnet34 ImageNet file there, or set train.encoder_weights: null for random init"
    )


def check_finite(state: dict[str, torch.Tensor], path) -> None:
    """Raise InputError if any floating tensor of a state dict holds NaN or inf."""
    for key, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            raise InputError(f"{path}: weight '{key}' holds NaN or inf; this checkpoint is corrupt, retrain it")


def save_checkpoint(path: Path, model: torch.nn.Module, config: dict, half_weights: bool = False) -> None:
    """Weights as safetensors (no pickle, same bytes for same weights) with the config as JSON metadata.

    half_weights: convolution kernels stored as float16 (half the file; they are loaded back into float32), the
    1-D tensors (biases, BatchNorm statistics, whose variances can be below float16's range) as they are.
    """
    from safetensors.torch import save_file


    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if half_weights:
        state = {k: v.half() if v.is_floating_point() and v.ndim >= 2 else v for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"micropatch": json.dumps(config, sort_keys=True)})


def round_to_half_storage(model: torch.nn.Module) -> torch.nn.Module:
    """Round the weights save_checkpoint(half_weights=True) stores as float16, in place: the model then predicts
    exactly what its released file will."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point() and tensor.ndim >= 2:
                tensor.copy_(tensor.half().float())
    return model


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a model from a safetensors checkpoint; anything else (a pickle, say) is refused, never executed."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: model checkpoint not found; run the train stage (dvc repro train) first")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # a pickle, a truncated file or random bytes: none of it is interpreted
        raise InputError(f"{path}: refused to load: not a safetensors checkpoint ({err.__class__.__name__}); "
                         "only load checkpoints written by micropatch") from err
    if "micropatch" not in metadata:
        raise InputError(f"{path}: not a micropatch checkpoint (no 'micropatch' config in its metadata)")
    check_finite(state, path)
    config = json.loads(metadata["micropatch"])
    model = build_model(len(config["lesions"]), config["encoder"], None, config["attention"],
                        config.get("in_channels", 1))
    model.load_state_dict(state)
    return model.to(device).eval(), config


def autocast(device: torch.device, precision: str = "fp32"):
    """The autocast context of a forward pass: float16 on CUDA (as always), bfloat16 where precision asks for it."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=device.type == "cuda")


class Autocast(torch.nn.Module):
    """A model run under autocast(precision), logits returned in float32 (inference's bf16 on torch)."""

    def __init__(self, model: torch.nn.Module, precision: str):
        super().__init__()
        self.model, self.precision = model, precision

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        with autocast(batch.device, self.precision):
            return self.model(batch).float()


def normalise(batch_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 or 0..255 float (N, 1, H, W) -> standardised float32 model input."""
    return (batch_uint8.float() / 255.0 - INPUT_MEAN) / INPUT_STD
