"""Training: patch loader with seeded augmentation, Dice+Focal loss, checkpoint/resume, epoch selection on the
selection split (tune when the manifest has one, else val), early stopping."""
from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .fileio import InputError, atomic_path, load_params
from .metrics import LEVELS, aupr_11, average_precision, counts_at, scores
from .model import PRECISIONS, autocast, build_model, normalise, save_checkpoint
from .parallel import Context, barrier, broadcast, convert_sync_batchnorm, global_batch_loss, shard_batches

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


class PatchDataset(Dataset):
    """Patches of a patch set (memory-mapped), augmented from a per-(seed, epoch, index) RNG."""

    channels = 1

    def __init__(self, patch_dir: Path, augment: bool, seed: int, brightness: float = 0.1, contrast: float = 0.1,
                 synthetic_ma: float = 0.0):
        self.folder = Path(patch_dir)
        self.images = np.load(self.folder / "images.npy", mmap_mode="r")
        self.masks = np.load(self.folder / "masks.npy", mmap_mode="r")
        self.augment, self.seed, self.epoch = augment, seed, 0
        self.brightness, self.contrast = brightness, contrast
        self.synthetic_ma = synthetic_ma
        self.bank = lesion_bank(self.images, self.masks) if synthetic_ma > 0 else []

    def __len__(self) -> int:
        return len(self.images)

    def weights(self) -> np.ndarray:
        """patch_weights of the set: its patches stand for whole images in the full-image estimates."""
        from .patches import read_patch_index, read_patch_meta

        return patch_weights([r["lesion_pixels"] for r in read_patch_index(self.folder)],
                             read_patch_meta(self.folder)["background_keep"])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index].astype(np.float32)  # (S, S), 0..255
        mask = self.masks[index].astype(np.float32)  # (L, S, S), {0, 1}
        if self.augment:
            # The RNG depends only on (seed, epoch, index): identical under any worker count or a resume.
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if self.bank and not mask.any() and rng.random() < self.synthetic_ma:
                image, mask = paste_lesions(image, mask, self.bank, rng)
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            image, mask = np.rot90(image, k), np.rot90(mask, k, axes=(1, 2))
            if flip:
                image, mask = image[:, ::-1], mask[:, :, ::-1]
            gain = 1 + rng.uniform(-self.contrast, self.contrast)
            shift = 255 * rng.uniform(-self.brightness, self.brightness)
            image = np.clip((image - 128) * gain + 128 + shift, 0, 255)
        return torch.from_numpy(np.ascontiguousarray(image)[None]), torch.from_numpy(np.ascontiguousarray(mask))


# Poisson-blended synthetic MAs: crops of at most this many lesions, each with this margin of its surroundings
# (whose gradients are blended into the target), from the train patches of MA (channel 0). Not cv2.seamlessClone:
# in OpenCV 5.0 it leaves the target unchanged for half the placements and for margins under 3 px (measured).
BANK_SIZE = 4000
PASTE_MARGIN = 4


def lesion_bank(images: np.ndarray, masks: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image crop uint8, mask crop bool) of each first-channel lesion component lying whole inside a training
    patch with PASTE_MARGIN px around it, in patch order, at most BANK_SIZE."""
    bank = []
    for k in np.flatnonzero(masks[:, 0].reshape(len(masks), -1).any(axis=1)):
        mask = np.asarray(masks[k, 0]).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for c in range(1, count):
            x, y, w, h, area = stats[c]
            if x < PASTE_MARGIN or y < PASTE_MARGIN or x + w + PASTE_MARGIN > mask.shape[1] \
                    or y + h + PASTE_MARGIN > mask.shape[0] or area < 3:
                continue
            y0, y1, x0, x1 = y - PASTE_MARGIN, y + h + PASTE_MARGIN, x - PASTE_MARGIN, x + w + PASTE_MARGIN
            bank.append((np.asarray(images[k, y0:y1, x0:x1]), labels[y0:y1, x0:x1] == c))
            if len(bank) == BANK_SIZE:
                return bank
    return bank


@functools.lru_cache(maxsize=256)
def laplace_solver(height: int, width: int):
    """LU factors of the 5-point Laplacian on the interior of a height x width rectangle (Dirichlet border), and
    the border's contribution: solve(border values) -> interior values of the harmonic function."""
    from scipy.sparse import diags, eye, kron
    from scipy.sparse.linalg import splu

    rows, cols = height - 2, width - 2
    second = lambda n: diags([1.0, -2.0, 1.0], [-1, 0, 1], shape=(n, n))  # noqa: E731
    laplacian = (kron(eye(rows), second(cols)) + kron(second(rows), eye(cols))).tocsc()
    return splu(laplacian)


def harmonic_fill(border: np.ndarray) -> np.ndarray:
    """float64 (h, w): the harmonic function (Laplace's equation) whose values on the rectangle's border are
    `border`'s (its interior is ignored)."""
    height, width = border.shape
    out = border.astype(np.float64).copy()
    if height < 3 or width < 3:
        return out
    rhs = np.zeros((height - 2, width - 2))  # the border's neighbours move to the right-hand side
    rhs[0] -= out[0, 1:-1]
    rhs[-1] -= out[-1, 1:-1]
    rhs[:, 0] -= out[1:-1, 0]
    rhs[:, -1] -= out[1:-1, -1]
    out[1:-1, 1:-1] = laplace_solver(height, width).solve(rhs.ravel()).reshape(height - 2, width - 2)
    return out


def poisson_paste(target: np.ndarray, source: np.ndarray, y: int, x: int) -> np.ndarray:
    """float64 copy of `target` (H, W) with `source` (h, w) Poisson-blended in at (y, x) (Perez et al. 2003, the
    whole rectangle as the region): the source's gradients inside, the target's values on the border; that is,
    the source plus the harmonic interpolation of (target - source) from the border."""
    height, width = source.shape
    out = target.astype(np.float64).copy()
    under = out[y:y + height, x:x + width]
    out[y:y + height, x:x + width] = source + harmonic_fill(under - source)
    return out


def paste_lesions(image: np.ndarray, mask: np.ndarray, bank: list, rng: np.random.Generator,
                  most: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A lesion-free float32 patch (S, S) and its (L, S, S) masks with 1..most bank lesions Poisson-blended in at
    random places (poisson_paste: the lesion's own contrast, the target's brightness around it), their masks set
    in channel 0."""
    canvas = np.asarray(image, np.float64)
    mask = mask.copy()
    size = canvas.shape[0]
    for _ in range(int(rng.integers(1, most + 1))):
        crop, lesion = bank[int(rng.integers(len(bank)))]
        height, width = crop.shape
        if height >= size or width >= size:
            continue
        y, x = int(rng.integers(0, size - height + 1)), int(rng.integers(0, size - width + 1))
        canvas = poisson_paste(canvas, crop.astype(np.float64), y, x)
        mask[0, y:y + height, x:x + width] |= lesion.astype(mask.dtype)
    return np.clip(canvas, 0, 255).astype(np.float32), mask


def open_patch_set(folder: Path, train: bool, seed: int, synthetic_ma: float = 0.0) -> Dataset:
    """The dataset of a patch set, by its meta.json: the micro-patching recipe's patches (augmented when train), or
    recipe study_baseline's squares (random crops when train, else tiles covering each square once)."""
    from .patches import read_patch_meta

    meta = read_patch_meta(folder)
    if meta.get("kind") == "squares":
        from .square import SquareCrops, SquareTiles

        if train:
            return SquareCrops(folder, seed, meta["patch"], meta["crops_per_image"], meta["augment"])
        return SquareTiles(folder, meta["patch"])
    return PatchDataset(folder, augment=train, seed=seed, synthetic_ma=synthetic_ma if train else 0.0)


LR_SCHEDULES = ("plateau", "cosine")
OPTIMIZERS = ("adamw", "sgd")
# patch_dice: pooled Dice at 0.5 over the selection patches, where about half the windows hold a lesion (the paper).
# dice, aupr_11, ap: full-image estimates: lesion-free windows weighted by 1 / background_keep, so the pooled counts
# stand for every window of the selection images, 99.9 % background as they are (weighted_histograms).
SELECTION_SCORES = ("patch_dice", "dice", "aupr_11", "ap")
EPOCHS_DIR = "epochs"  # beside the model file: the last train.swa_epochs epochs' weights


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
    lr_schedule: str             # plateau (ReduceLROnPlateau on the selection score, the paper) or cosine (per step)
    select_on: str               # the epoch's score on the selection split: one of SELECTION_SCORES
    optimizer: str               # adamw (the paper) or sgd (with momentum, Nesterov)
    momentum: float              # sgd only
    bce_weight: float            # loss = dice_weight * Dice + bce_weight * BCE + the rest * Focal
    processes: int               # > 1: the train stage runs itself under torchrun with this many processes
    sync_batchnorm: bool         # with processes > 1: BatchNorm statistics over the global batch
    monitor_val: bool            # with a tune split: also score val after every epoch, for the history only
    init_seed: int | None        # the initial weights' seed (null: seed); runs sharing it can be souped
    swa_epochs: int              # > 0: the weights of the last this many epochs are kept too (SWA, averaging.py)
    precision: str               # fp32, or bf16: autocast on CPUs with AVX512-BF16 or AMX (about 1.9x here)
    ohem_ratio: float            # > 0: the BCE term over the lesion pixels and only the hardest negatives, this many
                                 #   per lesion pixel of the batch (online hard-example mining)
    synthetic_ma: float          # > 0: this share of lesion-free training patches gets 1-3 real MA crops of the
                                 #   train split, Poisson-blended at random places (paste_lesions)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train.optimizer {self.optimizer!r}: choose one of {OPTIMIZERS}")
        if not (0 <= self.dice_weight and 0 <= self.bce_weight and self.dice_weight + self.bce_weight <= 1):
            raise ValueError(f"train.dice_weight {self.dice_weight} and train.bce_weight {self.bce_weight} must be "
                             "non-negative and sum to at most 1 (Focal takes the rest)")
        if not (isinstance(self.processes, int) and self.processes >= 1):
            raise ValueError(f"train.processes must be a positive integer, got {self.processes!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"train.lr_schedule {self.lr_schedule!r}: choose one of {LR_SCHEDULES}")
        if self.ohem_ratio < 0 or (self.ohem_ratio > 0 and self.bce_weight == 0):
            raise ValueError(f"train.ohem_ratio {self.ohem_ratio} needs train.bce_weight > 0: it mines the BCE term")
        if not 0 <= self.synthetic_ma <= 1:
            raise ValueError(f"train.synthetic_ma {self.synthetic_ma} must be a share in [0, 1]")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision {self.precision!r}: choose one of {PRECISIONS}")
        if self.select_on not in SELECTION_SCORES:
            raise ValueError(f"train.select_on {self.select_on!r}: choose one of {SELECTION_SCORES}")

    @classmethod
    def from_params(cls, path: str | Path = "params.yaml", **overrides) -> "TrainConfig":
        """params.yaml's `train` section, with overrides (tests and benchmarks shorten a run this way)."""
        return cls(**(load_params("train", path) | overrides))


def make_loss(n_classes: int, cfg: TrainConfig):
    """dice_weight Dice + bce_weight BCE + the rest Focal (alpha, gamma from cfg), on logits (the paper: 0.5 Dice +
    0.5 Focal). A term of weight 0 is not computed, so the paper's loss keeps the bits it had before BCE existed."""
    from segmentation_models_pytorch.losses import DiceLoss, FocalLoss

    mode = "binary" if n_classes == 1 else "multilabel"
    dice = DiceLoss(mode, from_logits=True)
    focal = FocalLoss(mode, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
    focal_weight = 1 - cfg.dice_weight - cfg.bce_weight
    if cfg.bce_weight == 0:
        return lambda logits, target: cfg.dice_weight * dice(logits, target) + focal_weight * focal(logits, target)
    bce = torch.nn.BCEWithLogitsLoss() if not cfg.ohem_ratio else lambda l, t: ohem_bce(l, t, cfg.ohem_ratio)
    return lambda logits, target: (cfg.dice_weight * dice(logits, target) + cfg.bce_weight * bce(logits, target)
                                   + focal_weight * focal(logits, target))


# With OHEM, a batch without lesion pixels still trains on this many of its hardest negative pixels.
OHEM_MIN_NEGATIVES = 1024


def ohem_bce(logits: torch.Tensor, target: torch.Tensor, ratio: float) -> torch.Tensor:
    """BCE over every lesion pixel and the `ratio` x as many negative pixels with the largest loss (at least
    OHEM_MIN_NEGATIVES): the easy background, most of every window, stops diluting the gradient."""
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    positive = target > 0.5
    negatives = loss[~positive]
    k = min(negatives.numel(), max(OHEM_MIN_NEGATIVES, int(ratio * int(positive.sum()))))
    hardest = torch.topk(negatives, k, sorted=False).values
    return (loss[positive].sum() + hardest.sum()) / (int(positive.sum()) + k)


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


def patch_weights(lesion_pixels: np.ndarray, background_keep: float) -> np.ndarray:
    """Per-patch weights that make a selection patch set stand for whole images: a lesion window was always kept
    (weight 1), a lesion-free one with probability background_keep (weight 1 / background_keep)."""
    if not 0 < background_keep <= 1:
        raise ValueError(f"background_keep {background_keep} must be in (0, 1]")
    return np.where(np.asarray(lesion_pixels) > 0, 1.0, 1.0 / background_keep)


def weighted_histograms(probability: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """float64 (L, 2, 256): metrics.image_histograms' counts, per lesion, with each patch counted `weights` times.

    probability: float (N, L, S, S) in [0, 1]; truth: bool (N, L, S, S); weights: (N,).
    """
    levels = np.round(np.clip(probability, 0, 1) * (LEVELS - 1)).astype(np.int64)  # as the maps are stored
    n, n_lesions = levels.shape[:2]
    pixel_weights = np.repeat(np.asarray(weights, np.float64), levels[0, 0].size)
    out = np.zeros((n_lesions, 2, LEVELS))
    for lesion in range(n_lesions):
        index = truth[:, lesion].reshape(n, -1).astype(np.int64) * LEVELS + levels[:, lesion].reshape(n, -1)
        out[lesion] = np.bincount(index.ravel(), pixel_weights, minlength=2 * LEVELS).reshape(2, LEVELS)
    return out


def evaluate_patches(model, loader, loss_fn, device, weights: np.ndarray | None = None,
                     precision: str = "fp32") -> dict[str, float]:
    """Selection scores over a patch loader (in order): loss, patch_dice (pooled at 0.5) and, with per-patch
    `weights` (patch_weights), the full-image estimates dice, aupr_11 and ap, means over the lesions."""
    model.eval()
    tp = fp = fn = 0
    losses, hist, seen = [], 0.0, 0
    with torch.inference_mode():
        for images, masks in loader:
            images = normalise(images.to(device)).contiguous(memory_format=torch.channels_last)
            masks = masks.to(device)
            with autocast(device, precision):
                logits = model(images)
            losses.append(loss_fn(logits.float(), masks).item())
            pred = logits > 0  # sigmoid(logit) > 0.5
            truth = masks > 0.5
            tp += int((pred & truth).sum())
            fp += int((pred & ~truth).sum())
            fn += int((~pred & truth).sum())
            if weights is not None:
                batch_weights = weights[seen:seen + len(images)]
                hist = hist + weighted_histograms(torch.sigmoid(logits.float()).cpu().numpy(),
                                                  truth.cpu().numpy(), batch_weights)
            seen += len(images)
    result = {"loss": mean(losses), "patch_dice": scores(tp, fp, fn)["dice"]}
    if weights is not None:
        result |= {"dice": mean([scores(*counts_at(h, 0.5))["dice"] for h in hist]),
                   "aupr_11": mean([aupr_11(h) for h in hist]), "ap": mean([average_precision(h) for h in hist])}
    return result


def mean(values: list[float]) -> float:
    """Correctly rounded mean (math.fsum), so it does not depend on a summation order; NaN when empty."""
    return math.fsum(values) / len(values) if values else math.nan


def state_dict_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a model's weights (the best epoch's, kept with the resume state)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def train(train_dir: Path, select_dir: Path, lesions: list[str], cfg: TrainConfig, model_path: Path,
          state_path: Path, fingerprint: str, recipe: dict | None = None, on_epoch=None,
          monitor_dir: Path | None = None, ctx: Context | None = None) -> dict:
    """Train; write the weights of the epoch with the best `cfg.select_on` score on select_dir's patches (the
    tune split when there is one, else val) to model_path when training ends.

    monitor_dir: a patch set scored after every epoch for the history only (val, when selection is on tune), never
    for selection, stopping or the learning rate.

    state_path holds everything a resume needs, the best weights so far included, so DVC deleting model_path
    before a rerun loses nothing. It is used only when its fingerprint (params and data) matches. recipe: what the
    model file carries besides its architecture (preprocessing, windows, data hash; see stages/train.py).

    ctx: under torchrun (parallel.setup), this process's rank: each trains on its shard of every global batch of
    cfg.batch_size, with the global batch's loss; rank 0 scores the selection split and alone writes files.
    """
    ctx = ctx or Context(0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    device = ctx.device
    torch.manual_seed(cfg.seed if cfg.init_seed is None else cfg.init_seed)
    train_set = open_patch_set(train_dir, train=True, seed=cfg.seed, synthetic_ma=cfg.synthetic_ma)
    select_set = open_patch_set(select_dir, train=False, seed=cfg.seed)
    for folder, patch_set in ((train_dir, train_set), (select_dir, select_set)):
        if len(patch_set) == 0:
            raise InputError(f"{folder}: no patches to {'train on' if patch_set is train_set else 'select on'}: its "
                             "split's images hold no lesion and no background window was kept; raise "
                             "split.val_fraction (or tune_fraction) or patchify.background_keep")
    model = build_model(len(lesions), cfg.encoder, cfg.encoder_weights, cfg.attention, train_set.channels)
    if cfg.init_seed is not None:  # the same start for every seed; the rest of the run is the seed's own
        torch.manual_seed(cfg.seed)
    if ctx.distributed and cfg.sync_batchnorm:
        model = convert_sync_batchnorm(model, device)
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model.parameters(), cfg)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch or steps_per_epoch)
    if cfg.lr_schedule == "cosine":  # stepped per batch, to lr * 1e-2 at the last step of the last epoch
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs * steps_per_epoch,
                                                               eta_min=cfg.lr * 1e-2)
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "max", cfg.lr_factor, cfg.lr_patience)
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    loss_fn = make_loss(len(lesions), cfg)
    train_loss_fn = global_batch_loss(loss_fn, ctx)
    state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": []}
    best_weights = state_dict_copy(model)
    recent = {}  # epoch -> weights, the last cfg.swa_epochs epochs (kept in the resume state)
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
            recent = {int(e): {k: v.cpu() for k, v in w.items()} for e, w in saved.get("recent", {}).items()}
            state = saved["progress"]
            log.info("resuming from %s after epoch %d", state_path, state["epoch"])
        else:
            log.info("ignoring %s: it belongs to other params or data", state_path)

    pin = device.type == "cuda"

    def weighted_loader(folder: Path) -> tuple[DataLoader, np.ndarray]:
        dataset = open_patch_set(folder, train=False, seed=cfg.seed)
        return (DataLoader(dataset, batch_size=2 * cfg.batch_size, num_workers=cfg.workers, pin_memory=pin),
                dataset.weights())

    select_loader, select_weights = weighted_loader(select_dir)
    monitor = weighted_loader(monitor_dir) if monitor_dir else None
    learner = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # static_graph: the same parameters are used every step, and some never (smp's last decoder block has
        # no skip connection, so its first attention module is not called)
        learner = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                          static_graph=True)

    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.early_stopping_patience:
        epoch = state["epoch"] + 1
        train_set.epoch = epoch
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_set))
        batches = [order[i:i + cfg.batch_size].tolist() for i in range(0, len(order), cfg.batch_size)]
        batches = shard_batches(batches[:steps_per_epoch], ctx)
        loader = DataLoader(train_set, batch_sampler=batches, num_workers=cfg.workers, pin_memory=pin)
        model.train()
        started, losses = time.perf_counter(), []
        for images, masks in tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False,
                                  disable=not ctx.is_main):
            try:
                losses.append(train_step(learner, optimizer, scaler, train_loss_fn, images, masks, device,
                                         cfg.precision))
                if cfg.lr_schedule == "cosine":
                    scheduler.step()
            except TrainingDiverged as err:
                raise TrainingDiverged(f"{err} in epoch {epoch}; kept the last good checkpoint {state_path} "
                                       "(lower train.lr, or check the patch set for corrupt values)") from None
        # rank 0 scores (the weights are the same on every rank); every rank then takes the same decisions
        selection = (evaluate_patches(model, select_loader, loss_fn, device, select_weights, cfg.precision)
                     if ctx.is_main else None)
        selection = broadcast(selection, ctx)
        score = selection[cfg.select_on]
        if cfg.lr_schedule == "plateau":
            scheduler.step(score)
        row = {"epoch": epoch, "train_loss": mean(losses)} | {f"select_{k}": v for k, v in selection.items()}
        if monitor and ctx.is_main:
            monitored = evaluate_patches(model, monitor[0], loss_fn, device, monitor[1], cfg.precision)
            row |= {f"monitor_{k}": v for k, v in monitored.items()}
        row["lr"] = optimizer.param_groups[0]["lr"]  # no timings here: metrics must repeat exactly
        state["history"].append(row)
        state["epoch"] = epoch
        if score > state["best_score"]:
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
            best_weights = state_dict_copy(model)
        else:
            state["bad_epochs"] += 1
        if cfg.swa_epochs:
            recent = {e: w for e, w in recent.items() if e > epoch - cfg.swa_epochs} | {epoch: state_dict_copy(model)}
        if ctx.is_main:
            with atomic_path(state_path) as tmp:
                torch.save({"fingerprint": fingerprint, "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "scaler": scaler.state_dict(), "torch_rng": torch.get_rng_state(),
                            "best_model": best_weights, "progress": state}
                           | ({"recent": {str(e): w for e, w in recent.items()}} if cfg.swa_epochs else {}), tmp)
        barrier(ctx)  # no rank runs ahead of the checkpoint it would resume from
        if not ctx.is_main:
            continue
        log.info("epoch %d: train loss %.4f; %s: loss %.4f, patch Dice %.4f, Dice %.4f, aupr_11 %.4f, AP %.4f "
                 "(%.0f s)", epoch, row["train_loss"], Path(select_dir).name, selection["loss"],
                 selection["patch_dice"], selection["dice"], selection["aupr_11"], selection["ap"],
                 time.perf_counter() - started)
        if on_epoch:
            on_epoch(state["history"])

    model.load_state_dict(best_weights)
    # in_channels only where it is not load_checkpoint's default of 1: micro-patching model files stay as they were
    channels = {} if train_set.channels == 1 else {"in_channels": train_set.channels}
    # train_precision only where it is not fp32: the files of fp32 models stay as they were
    channels |= {} if cfg.precision == "fp32" else {"train_precision": cfg.precision}
    config = (recipe or {}) | channels | {"lesions": list(lesions), "encoder": cfg.encoder,
                                          "attention": cfg.attention, "epoch": state["best_epoch"],
                                          "selection_split": Path(select_dir).name,
                                          f"select_{cfg.select_on}": state["best_score"]}
    if ctx.is_main:
        save_checkpoint(model_path, model, config)
        if cfg.swa_epochs:  # the trajectory's last epochs, beside the selected model (averaging.swa_model)
            import shutil

            shutil.rmtree(Path(model_path).parent / EPOCHS_DIR, ignore_errors=True)  # another run's epochs
            for epoch, weights in sorted(recent.items()):
                model.load_state_dict(weights)
                save_checkpoint(Path(model_path).parent / EPOCHS_DIR / f"epoch_{epoch:03d}.safetensors", model,
                                config | {"epoch": epoch})
            model.load_state_dict(best_weights)
    return {"epochs_run": state["epoch"], "best_epoch": state["best_epoch"], "selection_split": Path(select_dir).name,
            "select_on": cfg.select_on, "best_select_score": state["best_score"],
            "stopped_early": state["epoch"] < cfg.epochs, "history": state["history"],
            "train_patches": len(train_set), "select_patches": len(select_set), "device": device.type,
            "processes": ctx.world,
            "train_loss_final": state["history"][-1]["train_loss"] if state["history"] else math.nan}
