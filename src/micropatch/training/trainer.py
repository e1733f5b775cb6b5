"""Training: the loop, one step, checkpoint and resume, epoch selection on the
selection split (tune when the manifest has one, else val), early stopping."""
from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from micropatch.core.fileio import InputError, atomic_path
from micropatch.training.config import TrainConfig
from micropatch.training.dataset import open_patch_set
from micropatch.training.loss import make_loss
from micropatch.training.network import autocast, build_model, normalise, save_checkpoint
from micropatch.training.parallel import (
    Context,
    barrier,
    broadcast,
    convert_sync_batchnorm,
    global_batch_loss,
    shard_batches,
)
from micropatch.training.selection import evaluate_patches, mean

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


EPOCHS_DIR = "epochs"  # beside the model file: the last train.swa_epochs epochs' weights


def make_optimizer(parameters, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_step(model, optimizer, scaler, loss_fn, images, masks, device, precision: str = "fp32",
               channels_last: bool = True) -> float:
    """One optimisation step on a uint8-valued (N, 1, S, S) batch and its (N, L, S, S) masks; returns the loss.

    The training loop, the golden-weights probe (tests/test_compute.py) and benchmarks/train.py all run this
    (channels_last False: the benchmark's contiguous baseline).
    """
    layout = torch.channels_last if channels_last else torch.contiguous_format
    images = normalise(images.to(device, non_blocking=True)).contiguous(memory_format=layout)
    masks = masks.to(device, non_blocking=True)
    with autocast(device, precision):
        loss = loss_fn(model(images).float(), masks)
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"loss became {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item()


def state_dict_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a model's weights (the best epoch's, kept with the resume state)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@dataclass
class Run:
    """Where one training run reads and writes: the patch sets, the model file, the resume state (whose
    fingerprint of params and data must match for a resume), the recipe the model file carries, and who listens."""

    train_dir: Path
    select_dir: Path
    lesions: list[str]
    model_path: Path
    state_path: Path
    fingerprint: str
    recipe: dict | None = None
    on_epoch: Callable | None = None
    monitor_dir: Path | None = None


class Trainer:
    """One training run in small steps: build (data, model, optimiser, schedule; the seeds are drawn in the same
    order as always, so golden weights and resumes hold), resume, one epoch, selection, checkpoint, the end."""

    def __init__(self, run: Run, cfg: TrainConfig, ctx: Context):
        self.run, self.cfg, self.ctx, self.device = run, cfg, ctx, ctx.device
        torch.manual_seed(cfg.seed if cfg.init_seed is None else cfg.init_seed)
        self.train_set = open_patch_set(run.train_dir, train=True, seed=cfg.seed, synthetic_ma=cfg.synthetic_ma)
        self.select_set = open_patch_set(run.select_dir, train=False, seed=cfg.seed)
        self.check_patch_sets()
        model = build_model(len(run.lesions), cfg.encoder, cfg.encoder_weights, cfg.attention,
                            self.train_set.channels)
        if cfg.init_seed is not None:  # the same start for every seed; the rest of the run is the seed's own
            torch.manual_seed(cfg.seed)
        if ctx.distributed and cfg.sync_batchnorm:
            model = convert_sync_batchnorm(model, self.device)
        self.model = model.to(self.device).to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model.parameters(), cfg)
        steps = math.ceil(len(self.train_set) / cfg.batch_size)
        self.steps_per_epoch = min(steps, cfg.max_steps_per_epoch or steps)
        self.scheduler = self.make_scheduler()
        self.scaler = torch.amp.GradScaler(enabled=self.device.type == "cuda")
        self.loss_fn = make_loss(len(run.lesions), cfg)
        self.train_loss_fn = global_batch_loss(self.loss_fn, ctx)
        self.state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": []}
        self.best_weights = state_dict_copy(self.model)
        self.recent = {}  # epoch -> weights, the last cfg.swa_epochs epochs (kept in the resume state)

    def check_patch_sets(self) -> None:
        for folder, patch_set in ((self.run.train_dir, self.train_set), (self.run.select_dir, self.select_set)):
            if len(patch_set) == 0:
                raise InputError(f"{folder}: no patches to {'train on' if patch_set is self.train_set else 'select on'}"
                                 ": its split's images hold no lesion and no background window was kept; raise "
                                 "split.val_fraction (or tune_fraction) or patchify.background_keep")

    def make_scheduler(self):
        cfg = self.cfg
        if cfg.lr_schedule == "cosine":  # stepped per batch, to lr * 1e-2 at the last step of the last epoch
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, cfg.epochs * self.steps_per_epoch,
                                                              eta_min=cfg.lr * 1e-2)
        return torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, "max", cfg.lr_factor, cfg.lr_patience)

    def resume(self) -> None:
        """Everything from the resume state, when it exists and its fingerprint matches."""
        path = self.run.state_path
        if not path.is_file():
            return
        try:
            saved = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as err:  # weights_only refuses any pickle that is not plain tensors and containers
            raise InputError(f"{path}: refused to resume from it ({err.__class__.__name__}); it was not "
                             "written by micropatch: delete it to train from scratch") from err
        if saved.get("fingerprint") != self.run.fingerprint:
            log.info("ignoring %s: it belongs to other params or data", path)
            return
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["torch_rng"])
        self.best_weights = {k: v.cpu() for k, v in saved["best_model"].items()}
        self.recent = {int(e): {k: v.cpu() for k, v in w.items()} for e, w in saved.get("recent", {}).items()}
        self.state = saved["progress"]
        log.info("resuming from %s after epoch %d", path, self.state["epoch"])

    def weighted_loader(self, folder: Path) -> tuple[DataLoader, np.ndarray]:
        """A selection or monitoring patch set in order, with its full-image weights."""
        dataset = open_patch_set(folder, train=False, seed=self.cfg.seed)
        loader = DataLoader(dataset, batch_size=2 * self.cfg.batch_size, num_workers=self.cfg.workers,
                            pin_memory=self.device.type == "cuda")
        return loader, dataset.weights()

    def learner(self) -> torch.nn.Module:
        """The model, wrapped for data-parallel training under torchrun."""
        if not self.ctx.distributed:
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        # static_graph: the same parameters are used every step, and some never (smp's last decoder block has
        # no skip connection, so its first attention module is not called)
        return DistributedDataParallel(self.model, static_graph=True,
                                       device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def train_epoch(self, epoch: int, learner: torch.nn.Module) -> list[float]:
        """One epoch's steps, the batches a permutation seeded by (seed, epoch); the losses."""
        cfg = self.cfg
        self.train_set.epoch = epoch
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(self.train_set))
        batches = [order[i:i + cfg.batch_size].tolist() for i in range(0, len(order), cfg.batch_size)]
        batches = shard_batches(batches[:self.steps_per_epoch], self.ctx)
        loader = DataLoader(self.train_set, batch_sampler=batches, num_workers=cfg.workers,
                            pin_memory=self.device.type == "cuda")
        self.model.train()
        losses = []
        for images, masks in tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False,
                                  disable=not self.ctx.is_main):
            try:
                losses.append(train_step(learner, self.optimizer, self.scaler, self.train_loss_fn, images, masks,
                                         self.device, cfg.precision))
                if cfg.lr_schedule == "cosine":
                    self.scheduler.step()
            except TrainingDiverged as err:
                raise TrainingDiverged(f"{err} in epoch {epoch}; kept the last good checkpoint {self.run.state_path} "
                                       "(lower train.lr, or check the patch set for corrupt values)") from None
        return losses

    def select(self, epoch: int, losses: list[float], select: tuple, monitor: tuple | None) -> tuple[dict, dict]:
        """The epoch's selection scores (rank 0 scores, every rank takes its decisions), the schedule's step, the
        history row, and the best weights so far."""
        cfg, state = self.cfg, self.state
        loader, weights = select
        selection = (evaluate_patches(self.model, loader, self.loss_fn, self.device, weights, cfg.precision)
                     if self.ctx.is_main else None)
        selection = broadcast(selection, self.ctx)
        score = selection[cfg.select_on]
        if cfg.lr_schedule == "plateau":
            self.scheduler.step(score)
        row = {"epoch": epoch, "train_loss": mean(losses)} | {f"select_{k}": v for k, v in selection.items()}
        if monitor and self.ctx.is_main:
            monitored = evaluate_patches(self.model, monitor[0], self.loss_fn, self.device, monitor[1], cfg.precision)
            row |= {f"monitor_{k}": v for k, v in monitored.items()}
        row["lr"] = self.optimizer.param_groups[0]["lr"]  # no timings here: metrics must repeat exactly
        state["history"].append(row)
        state["epoch"] = epoch
        if score > state["best_score"]:
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
            self.best_weights = state_dict_copy(self.model)
        else:
            state["bad_epochs"] += 1
        if cfg.swa_epochs:
            self.recent = ({e: w for e, w in self.recent.items() if e > epoch - cfg.swa_epochs}
                           | {epoch: state_dict_copy(self.model)})
        return selection, row

    def checkpoint(self) -> None:
        """The resume state, written atomically by rank 0; no rank runs ahead of it."""
        if self.ctx.is_main:
            with atomic_path(self.run.state_path) as tmp:
                torch.save({"fingerprint": self.run.fingerprint, "model": self.model.state_dict(),
                            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                            "scaler": self.scaler.state_dict(), "torch_rng": torch.get_rng_state(),
                            "best_model": self.best_weights, "progress": self.state}
                           | ({"recent": {str(e): w for e, w in self.recent.items()}} if self.cfg.swa_epochs
                              else {}), tmp)
        barrier(self.ctx)

    def fit(self) -> None:
        """Epochs until cfg.epochs or early stopping, each checkpointed."""
        select = self.weighted_loader(self.run.select_dir)
        monitor = self.weighted_loader(self.run.monitor_dir) if self.run.monitor_dir else None
        learner = self.learner()
        while self.state["epoch"] < self.cfg.epochs and self.state["bad_epochs"] < self.cfg.early_stopping_patience:
            epoch = self.state["epoch"] + 1
            started = time.perf_counter()
            losses = self.train_epoch(epoch, learner)
            selection, row = self.select(epoch, losses, select, monitor)
            self.checkpoint()
            if not self.ctx.is_main:
                continue
            log.info("epoch %d: train loss %.4f; %s: loss %.4f, patch Dice %.4f, Dice %.4f, aupr_11 %.4f, AP %.4f "
                     "(%.0f s)", epoch, row["train_loss"], Path(self.run.select_dir).name, selection["loss"],
                     selection["patch_dice"], selection["dice"], selection["aupr_11"], selection["ap"],
                     time.perf_counter() - started)
            if self.run.on_epoch:
                self.run.on_epoch(self.state["history"])

    def model_config(self) -> dict:
        """What the model file carries: the recipe, the architecture and the selection."""
        cfg = self.cfg
        # in_channels only where it is not load_checkpoint's default of 1, train_precision only where it is not
        # fp32: the files of the method's models stay as they were
        extra = {} if self.train_set.channels == 1 else {"in_channels": self.train_set.channels}
        extra |= {} if cfg.precision == "fp32" else {"train_precision": cfg.precision}
        return (self.run.recipe or {}) | extra | {"lesions": list(self.run.lesions), "encoder": cfg.encoder,
                                                  "attention": cfg.attention, "epoch": self.state["best_epoch"],
                                                  "selection_split": Path(self.run.select_dir).name,
                                                  f"select_{cfg.select_on}": self.state["best_score"]}

    def save(self) -> None:
        """The best epoch's weights to the model file (rank 0), and with train.swa_epochs the last epochs' beside
        it (averaging.swa_model)."""
        self.model.load_state_dict(self.best_weights)
        config = self.model_config()
        if not self.ctx.is_main:
            return
        save_checkpoint(self.run.model_path, self.model, config)
        if self.cfg.swa_epochs:
            folder = Path(self.run.model_path).parent / EPOCHS_DIR
            shutil.rmtree(folder, ignore_errors=True)  # another run's epochs
            for epoch, weights in sorted(self.recent.items()):
                self.model.load_state_dict(weights)
                save_checkpoint(folder / f"epoch_{epoch:03d}.safetensors", self.model, config | {"epoch": epoch})
            self.model.load_state_dict(self.best_weights)

    def summary(self) -> dict:
        state = self.state
        return {"epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
                "selection_split": Path(self.run.select_dir).name, "select_on": self.cfg.select_on,
                "best_select_score": state["best_score"], "stopped_early": state["epoch"] < self.cfg.epochs,
                "history": state["history"], "train_patches": len(self.train_set),
                "select_patches": len(self.select_set), "device": self.device.type, "processes": self.ctx.world,
                "train_loss_final": state["history"][-1]["train_loss"] if state["history"] else math.nan}


def train(train_dir: Path, select_dir: Path, lesions: list[str], cfg: TrainConfig, model_path: Path,
          state_path: Path, fingerprint: str, recipe: dict | None = None, on_epoch=None,
          monitor_dir: Path | None = None, ctx: Context | None = None) -> dict:
    """Train; write the weights of the epoch with the best `cfg.select_on` score on select_dir's patches (the
    tune split when there is one, else val) to model_path when training ends (the Trainer's steps in order).

    monitor_dir: a patch set scored after every epoch for the history only (val, when selection is on tune), never
    for selection, stopping or the learning rate.

    state_path holds everything a resume needs, the best weights so far included, so DVC deleting model_path
    before a rerun loses nothing. It is used only when its fingerprint (params and data) matches. recipe: what the
    model file carries besides its architecture (preprocessing, windows, data hash; see stages/train.py).

    ctx: under torchrun (parallel.setup), this process's rank: each trains on its shard of every global batch of
    cfg.batch_size, with the global batch's loss; rank 0 scores the selection split and alone writes files.
    """
    ctx = ctx or Context(0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    trainer = Trainer(Run(train_dir, select_dir, lesions, model_path, state_path, fingerprint, recipe, on_epoch,
                          monitor_dir), cfg, ctx)
    trainer.resume()
    trainer.fit()
    trainer.save()
    return trainer.summary()
