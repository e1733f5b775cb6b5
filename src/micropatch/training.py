"""Training: patch loader with seeded augmentation, Dice+Focal loss, checkpoint/resume, early stopping."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .fileio import InputError, atomic_path, load_params
from .metrics import scores
from .model import build_model, normalise, save_checkpoint

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


class PatchDataset(Dataset):
    """Patches of a patch set (memory-mapped), augmented from a per-(seed, epoch, index) RNG."""

    def __init__(self, patch_dir: Path, augment: bool, seed: int, brightness: float = 0.1, contrast: float = 0.1):
        self.images = np.load(Path(patch_dir) / "images.npy", mmap_mode="r")
        self.masks = np.load(Path(patch_dir) / "masks.npy", mmap_mode="r")
        self.augment, self.seed, self.epoch = augment, seed, 0
        self.brightness, self.contrast = brightness, contrast

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index].astype(np.float32)  # (S, S), 0..255
        mask = self.masks[index].astype(np.float32)  # (L, S, S), {0, 1}
        if self.augment:
            # The RNG depends only on (seed, epoch, index): identical under any worker count or a resume.
            rng = np.random.default_rng([self.seed, self.epoch, index])
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            image, mask = np.rot90(image, k), np.rot90(mask, k, axes=(1, 2))
            if flip:
                image, mask = image[:, ::-1], mask[:, :, ::-1]
            gain = 1 + rng.uniform(-self.contrast, self.contrast)
            shift = 255 * rng.uniform(-self.brightness, self.brightness)
            image = np.clip((image - 128) * gain + 128 + shift, 0, 255)
        return torch.from_numpy(np.ascontiguousarray(image)[None]), torch.from_numpy(np.ascontiguousarray(mask))


@dataclass(frozen=True)
class TrainConfig:
    """The train section of params.yaml, which is the only place its values are written down."""

    encoder: str
    encoder_weights: str | None
    attention: str | None
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    dice_weight: float
    focal_alpha: float
    focal_gamma: float
    lr_patience: int
    lr_factor: float
    early_stopping_patience: int
    workers: int
    seed: int
    max_steps_per_epoch: int | None

    @classmethod
    def from_params(cls, path: str | Path = "params.yaml", **overrides) -> "TrainConfig":
        """params.yaml's `train` section, with overrides (tests and benchmarks shorten a run this way)."""
        return cls(**(load_params("train", path) | overrides))


def make_loss(n_classes: int, cfg: TrainConfig):
    """0.5 Dice + 0.5 Focal (alpha, gamma from cfg) on logits."""
    from segmentation_models_pytorch.losses import DiceLoss, FocalLoss

    mode = "binary" if n_classes == 1 else "multilabel"
    dice = DiceLoss(mode, from_logits=True)
    focal = FocalLoss(mode, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
    return lambda logits, target: cfg.dice_weight * dice(logits, target) + (1 - cfg.dice_weight) * focal(logits, target)


def train_step(model, optimizer, scaler, loss_fn, images, masks, device) -> float:
    """One optimisation step on a uint8-valued (N, 1, S, S) batch and its (N, L, S, S) masks; returns the loss.

    The training loop, the golden-weights probe (tests/test_compute.py) and benchmarks/train.py all run this.
    """
    images = normalise(images.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
    masks = masks.to(device, non_blocking=True)
    with torch.autocast(device.type, enabled=device.type == "cuda"):
        loss = loss_fn(model(images).float(), masks)
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"loss became {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item()


def evaluate_patches(model, loader, loss_fn, device) -> tuple[float, float]:
    """(mean loss, pooled Dice at 0.5) over a patch loader."""
    model.eval()
    tp = fp = fn = 0
    losses = []
    with torch.inference_mode():
        for images, masks in loader:
            images = normalise(images.to(device)).contiguous(memory_format=torch.channels_last)
            masks = masks.to(device)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                logits = model(images)
            losses.append(loss_fn(logits.float(), masks).item())
            pred = logits > 0  # sigmoid(logit) > 0.5
            truth = masks > 0.5
            tp += int((pred & truth).sum())
            fp += int((pred & ~truth).sum())
            fn += int((~pred & truth).sum())
    return mean(losses), scores(tp, fp, fn)["dice"]


def mean(values: list[float]) -> float:
    """Correctly rounded mean (math.fsum), so it does not depend on a summation order; NaN when empty."""
    return math.fsum(values) / len(values) if values else math.nan


def state_dict_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a model's weights (the best epoch's, kept with the resume state)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def train(train_dir: Path, val_dir: Path, lesions: list[str], cfg: TrainConfig, model_path: Path,
          state_path: Path, fingerprint: str, recipe: dict | None = None, on_epoch=None) -> dict:
    """Train; write the best val-Dice weights to model_path when training ends.

    state_path holds everything a resume needs, the best weights so far included, so DVC deleting model_path
    before a rerun loses nothing. It is used only when its fingerprint (params and data) matches. recipe: what the
    model file carries besides its architecture (preprocessing, windows, data hash; see stages/train.py).
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    model = build_model(len(lesions), cfg.encoder, cfg.encoder_weights, cfg.attention)
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "max", cfg.lr_factor, cfg.lr_patience)
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    loss_fn = make_loss(len(lesions), cfg)
    state = {"epoch": 0, "best_dice": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": []}
    best_weights = state_dict_copy(model)
    if state_path.is_file():
        try:
            saved = torch.load(state_path, map_location=device, weights_only=True)
        except Exception as err:  # weights_only refuses any pickle that is not plain tensors and containers
            raise InputError(f"{state_path}: refused to resume from it ({err.__class__.__name__}); it was not "
                             "written by micropatch: delete it to train from scratch") from err
        if saved.get("fingerprint") == fingerprint:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved["scaler"])
            torch.set_rng_state(saved["torch_rng"])
            best_weights = {k: v.cpu() for k, v in saved["best_model"].items()}
            state = saved["progress"]
            log.info("resuming from %s after epoch %d", state_path, state["epoch"])
        else:
            log.info("ignoring %s: it belongs to other params or data", state_path)

    train_set = PatchDataset(train_dir, augment=True, seed=cfg.seed)
    val_set = PatchDataset(val_dir, augment=False, seed=cfg.seed)
    pin = device.type == "cuda"
    val_loader = DataLoader(val_set, batch_size=2 * cfg.batch_size, num_workers=cfg.workers, pin_memory=pin)

    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.early_stopping_patience:
        epoch = state["epoch"] + 1
        train_set.epoch = epoch
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_set))
        batches = [order[i:i + cfg.batch_size].tolist() for i in range(0, len(order), cfg.batch_size)]
        batches = batches[:cfg.max_steps_per_epoch] if cfg.max_steps_per_epoch else batches
        loader = DataLoader(train_set, batch_sampler=batches, num_workers=cfg.workers, pin_memory=pin)
        model.train()
        started, losses = time.perf_counter(), []
        for images, masks in tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False):
            try:
                losses.append(train_step(model, optimizer, scaler, loss_fn, images, masks, device))
            except TrainingDiverged as err:
                raise TrainingDiverged(f"{err} in epoch {epoch}; kept the last good checkpoint {state_path} "
                                       "(lower train.lr, or check the patch set for corrupt values)") from None
        val_loss, val_dice = evaluate_patches(model, val_loader, loss_fn, device)
        scheduler.step(val_dice)
        row = {"epoch": epoch, "train_loss": mean(losses), "val_loss": val_loss, "val_dice": val_dice,
               "lr": optimizer.param_groups[0]["lr"]}  # no timings here: metrics must repeat exactly
        state["history"].append(row)
        state["epoch"] = epoch
        if val_dice > state["best_dice"]:
            state.update(best_dice=val_dice, best_epoch=epoch, bad_epochs=0)
            best_weights = state_dict_copy(model)
        else:
            state["bad_epochs"] += 1
        with atomic_path(state_path) as tmp:
            torch.save({"fingerprint": fingerprint, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                        "torch_rng": torch.get_rng_state(), "best_model": best_weights, "progress": state}, tmp)
        log.info("epoch %d: train loss %.4f, val loss %.4f, val Dice %.4f (%.0f s)", epoch, row["train_loss"],
                 val_loss, val_dice, time.perf_counter() - started)
        if on_epoch:
            on_epoch(state["history"])

    model.load_state_dict(best_weights)
    config = (recipe or {}) | {"lesions": list(lesions), "encoder": cfg.encoder, "attention": cfg.attention,
                               "epoch": state["best_epoch"], "val_dice": state["best_dice"]}
    save_checkpoint(model_path, model, config)
    return {"epochs_run": state["epoch"], "best_epoch": state["best_epoch"], "best_val_dice": state["best_dice"],
            "stopped_early": state["epoch"] < cfg.epochs, "history": state["history"],
            "train_patches": len(train_set), "val_patches": len(val_set), "device": device.type,
            "train_loss_final": state["history"][-1]["train_loss"] if state["history"] else math.nan}
