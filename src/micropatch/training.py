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

from .io import InputError, atomic_path
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


@dataclass
class TrainConfig:
    """The train section of params.yaml."""

    encoder: str = "resnet34"
    encoder_weights: str | None = None
    attention: str | None = "scse"
    epochs: int = 2
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dice_weight: float = 0.5
    focal_alpha: float = 0.85
    focal_gamma: float = 2.0
    lr_patience: int = 2
    lr_factor: float = 0.5
    early_stopping_patience: int = 5
    workers: int = 0
    seed: int = 0
    max_steps_per_epoch: int | None = None


def make_loss(n_classes: int, cfg: TrainConfig):
    """0.5 Dice + 0.5 Focal (alpha, gamma from cfg) on logits."""
    from segmentation_models_pytorch.losses import DiceLoss, FocalLoss

    mode = "binary" if n_classes == 1 else "multilabel"
    dice = DiceLoss(mode, from_logits=True)
    focal = FocalLoss(mode, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
    return lambda logits, target: cfg.dice_weight * dice(logits, target) + (1 - cfg.dice_weight) * focal(logits, target)


def evaluate_patches(model, loader, loss_fn, device) -> tuple[float, float]:
    """(mean loss, pooled Dice at 0.5) over a patch loader."""
    model.eval()
    tp = fp = fn = 0.0
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
            tp += float((pred & truth).sum())
            fp += float((pred & ~truth).sum())
            fn += float((~pred & truth).sum())
    dice = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else 1.0
    return float(np.mean(losses)) if losses else float("nan"), dice


def train(train_dir: Path, val_dir: Path, lesions: list[str], cfg: TrainConfig, model_path: Path,
          state_path: Path, fingerprint: str, on_epoch=None) -> dict:
    """Train to model_path (best val Dice); resume from state_path when its fingerprint matches."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    model = build_model(len(lesions), cfg.encoder, cfg.encoder_weights, cfg.attention)
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "max", cfg.lr_factor, cfg.lr_patience)
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    loss_fn = make_loss(len(lesions), cfg)
    state = {"epoch": 0, "best_dice": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": []}
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
            state = saved["progress"]
            log.info("resuming from %s after epoch %d", state_path, state["epoch"])
        else:
            log.info("ignoring %s: it belongs to other params or data", state_path)

    train_set = PatchDataset(train_dir, augment=True, seed=cfg.seed)
    val_set = PatchDataset(val_dir, augment=False, seed=cfg.seed)
    pin = device.type == "cuda"
    val_loader = DataLoader(val_set, batch_size=2 * cfg.batch_size, num_workers=cfg.workers, pin_memory=pin)
    config = {"lesions": list(lesions), "encoder": cfg.encoder, "attention": cfg.attention}

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
            images = normalise(images.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
            masks = masks.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                loss = loss_fn(model(images).float(), masks)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss.item()} in epoch {epoch}; kept the last good checkpoint {state_path} "
                    "(lower train.lr, or check the patch set for corrupt values)")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.item())
        val_loss, val_dice = evaluate_patches(model, val_loader, loss_fn, device)
        scheduler.step(val_dice)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss, "val_dice": val_dice,
               "lr": optimizer.param_groups[0]["lr"]}  # no timings here: metrics must repeat exactly
        state["history"].append(row)
        state["epoch"] = epoch
        if val_dice > state["best_dice"]:
            state.update(best_dice=val_dice, best_epoch=epoch, bad_epochs=0)
            save_checkpoint(model_path, model, config | {"epoch": epoch, "val_dice": val_dice})
        else:
            state["bad_epochs"] += 1
        with atomic_path(state_path) as tmp:  # written after the best model, so a resume never loses it
            torch.save({"fingerprint": fingerprint, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                        "torch_rng": torch.get_rng_state(), "progress": state}, tmp)
        log.info("epoch %d: train loss %.4f, val loss %.4f, val Dice %.4f (%.0f s)", epoch, row["train_loss"],
                 val_loss, val_dice, time.perf_counter() - started)
        if on_epoch:
            on_epoch(state["history"])
    return {"epochs_run": state["epoch"], "best_epoch": state["best_epoch"], "best_val_dice": state["best_dice"],
            "stopped_early": state["epoch"] < cfg.epochs, "history": state["history"],
            "train_patches": len(train_set), "val_patches": len(val_set), "device": device.type,
            "train_loss_final": state["history"][-1]["train_loss"] if state["history"] else math.nan}
