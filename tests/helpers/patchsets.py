"""Small seeded patch sets on disk, for the training tests."""
from pathlib import Path

import numpy as np

from micropatch.data.patches import write_patch_set


def patch_set(folder: Path, n: int, seed: int, size: int = 128) -> Path:
    rng = np.random.default_rng(seed)
    images = rng.integers(60, 200, (n, size, size)).astype(np.uint8)
    masks = np.zeros((n, 1, size, size), np.uint8)
    for i in range(n):
        y, x = rng.integers(10, size - 10, 2)
        masks[i, 0, y - 3:y + 3, x - 3:x + 3] = 1
        images[i][masks[i, 0] > 0] = 20
    index = [{"dataset": "d", "image_id": f"i{i}", "y": 0, "x": 0, "lesion_pixels": 36} for i in range(n)]
    write_patch_set(folder, images, masks, index, {"patches": n, "background_keep": 0.1})
    return folder
