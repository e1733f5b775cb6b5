"""Training data: patch sets (memory-mapped), their seeded augmentation and
Poisson-blended synthetic microaneurysms."""
from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.sparse import diags, eye, kron
from scipy.sparse.linalg import splu
from torch.utils.data import Dataset

from micropatch.data.patches import read_patch_index, read_patch_meta
from micropatch.training.selection import patch_weights


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
        # a maximum, not `|=`: the dataset's masks are float32 (bitwise-or is for the integer masks on disk)
        region = mask[0, y:y + height, x:x + width]
        np.maximum(region, lesion.astype(mask.dtype), out=region)
    return np.clip(canvas, 0, 255).astype(np.float32), mask


def open_patch_set(folder: Path, train: bool, seed: int, synthetic_ma: float = 0.0) -> Dataset:
    """The dataset of a patch set, by its meta.json: the micro-patching recipe's patches (augmented when train), or
    recipe study_baseline's squares (random crops when train, else tiles covering each square once)."""
    meta = read_patch_meta(folder)
    if meta.get("kind") == "squares":
        from micropatch.training.squares import SquareCrops, SquareTiles

        if train:
            return SquareCrops(folder, seed, meta["patch"], meta["crops_per_image"], meta["augment"])
        return SquareTiles(folder, meta["patch"])
    return PatchDataset(folder, augment=train, seed=seed, synthetic_ma=synthetic_ma if train else 0.0)
