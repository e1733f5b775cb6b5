"""Recipe study_baseline's training data: random crops of each square (augmented) and,
for selection, tiles covering each square."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from micropatch.data.patches import window_starts
from micropatch.data.square import augment_colour


class SquareCrops(Dataset):
    """Training draws of a square set: `crops_per_image` random patch x patch crops of every square per epoch,
    rotated by k * 90 degrees, flipped and colour-augmented, all from a per-(seed, epoch, index) RNG (the same
    under any worker count or a resume, as PatchDataset)."""

    channels = 3

    def __init__(self, folder: Path, seed: int, patch: int, crops_per_image: int, augment: dict):
        self.images = np.load(Path(folder) / "images.npy", mmap_mode="r")
        self.masks = np.load(Path(folder) / "masks.npy", mmap_mode="r")
        self.seed, self.patch, self.crops, self.augment, self.epoch = seed, patch, crops_per_image, augment, 0

    def __len__(self) -> int:
        return len(self.images) * self.crops

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        square, side = index % len(self.images), self.images.shape[1]
        y, x = (int(v) for v in rng.integers(0, side - self.patch + 1, size=2))
        image = self.images[square, y:y + self.patch, x:x + self.patch].astype(np.float32)  # (P, P, 3)
        mask = self.masks[square, :, y:y + self.patch, x:x + self.patch].astype(np.float32)  # (L, P, P)
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        image, mask = np.rot90(image, k), np.rot90(mask, k, axes=(1, 2))
        if flip:
            image, mask = image[:, ::-1], mask[:, :, ::-1]
        image = augment_colour(np.ascontiguousarray(image), rng, **self.augment)
        return (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                torch.from_numpy(np.ascontiguousarray(mask)))


class SquareTiles(Dataset):
    """Selection windows of a square set: patch x patch tiles covering every square once (the last flush with its
    edge), unaugmented. Together they are the whole square, so each counts once in the full-image estimates."""

    channels = 3

    def __init__(self, folder: Path, patch: int):
        self.images = np.load(Path(folder) / "images.npy", mmap_mode="r")
        self.masks = np.load(Path(folder) / "masks.npy", mmap_mode="r")
        starts = window_starts(self.images.shape[1], patch, patch) if len(self.images) else []
        self.tiles = [(n, int(y), int(x)) for n in range(len(self.images)) for y in starts for x in starts]
        self.patch = patch

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        n, y, x = self.tiles[index]
        image = self.images[n, y:y + self.patch, x:x + self.patch].astype(np.float32).transpose(2, 0, 1)
        mask = self.masks[n, :, y:y + self.patch, x:x + self.patch].astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(mask))

    def weights(self) -> np.ndarray:
        return np.ones(len(self.tiles))
