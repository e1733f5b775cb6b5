"""Stage patchify: 128x128 windows every 64 px of each train/val image; all lesion windows, 10 % of background."""
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from micropatch import logs
from micropatch.io import load_params, read_png
from micropatch.patches import select_windows, write_patch_set
from micropatch.split import read_manifest

PREPROCESSED = Path("data/preprocessed")
OUT = Path("data/patches")


def main() -> None:
    logs.setup()
    params = load_params("patchify")
    lesions = load_params("lesions")
    size, stride = params["size"], params["stride"]
    manifest = read_manifest("data/splits/manifest.csv")
    for split in ("train", "val"):
        images, masks, index, per_image = [], [], [], {}
        for row in tqdm([r for r in manifest if r["split"] == split], desc=f"patchify {split}", unit="img"):
            folder = PREPROCESSED / row["dataset"]
            image = read_png(folder / f"{row['image_id']}.png")
            fov = read_png(folder / f"{row['image_id']}_fov.png") > 0
            lesion = np.stack([read_png(folder / f"{row['image_id']}_{name}.png") > 0 for name in lesions])
            # seeded per image (by its bytes), so adding an image never changes another image's patches
            rng = np.random.default_rng([params["seed"], int(row["sha256"][:12], 16)])
            kept = select_windows(lesion.any(axis=0), fov, size, stride, params["background_keep"], rng)
            for y, x, lesion_pixels in kept:
                images.append(image[y:y + size, x:x + size])
                masks.append(lesion[:, y:y + size, x:x + size])
                index.append({"dataset": row["dataset"], "image_id": row["image_id"], "y": y, "x": x,
                              "lesion_pixels": lesion_pixels})
            per_image[f"{row['dataset']}/{row['image_id']}"] = {
                "lesion_patches": sum(1 for k in kept if k[2] > 0), "background_patches": sum(1 for k in kept if k[2] == 0)}
        stacked_images = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
        stacked_masks = np.stack(masks).astype(np.uint8) if masks else np.zeros((0, len(lesions), size, size), np.uint8)
        meta = {"split": split, "lesions": lesions, "size": size, "stride": stride,
                "background_keep": params["background_keep"], "seed": params["seed"], "patches": len(index),
                "lesion_patches": sum(1 for r in index if r["lesion_pixels"] > 0), "per_image": per_image}
        write_patch_set(OUT / split, stacked_images, stacked_masks, index, meta)
        logging.info("patchify %s: %d patches (%d with lesion) from %d images", split, meta["patches"],
                     meta["lesion_patches"], len(per_image))


if __name__ == "__main__":
    main()
