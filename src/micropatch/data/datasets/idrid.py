"""IDRiD adapter: the official 'A. Segmentation' layout."""
from __future__ import annotations

import logging
import re
from pathlib import Path

from micropatch.data.datasets.base import Record, image_files, report, top_or_parent

log = logging.getLogger(__name__)

SEGMENTATION = "A. Segmentation"
IMAGES = "1. Original Images"
TRUTHS = "2. All Segmentation Groundtruths"
SPLITS = {"a. Training Set": "train", "b. Testing Set": "test"}
LESION_FOLDERS = {"MA": "1. Microaneurysms", "HE": "2. Haemorrhages", "EX": "3. Hard Exudates",
                  "SE": "4. Soft Exudates"}
OPTIONAL = {"HE", "SE"}  # IDRiD ships these only for images that have the lesion (IDRiD_43 has no HE)
IMAGE_NAME = re.compile(r"^(IDRiD_\d+)\.jpe?g$", re.IGNORECASE)


def resolve_root(root: Path) -> Path:
    """The 'A. Segmentation' folder, given it or the folder above it; raises InputError naming what is missing."""
    return top_or_parent(root, SEGMENTATION, IMAGES, "IDRiD")


def records(root: Path, dataset: str = "idrid", problems: list[str] | None = None) -> list[Record]:
    """One Record per image, for the training and testing sets present under root."""
    seg = resolve_root(root)
    out = []
    for folder, split in SPLITS.items():
        for path in image_files(seg / IMAGES / folder, (".jpg", ".jpeg")):
            match = IMAGE_NAME.match(path.name)
            if not match:
                log.warning("IDRiD: ignoring %s: not named IDRiD_NN.jpg", path)
                continue
            image_id = match.group(1)
            masks = {}
            for lesion, lesion_folder in LESION_FOLDERS.items():
                mask = seg / TRUTHS / folder / lesion_folder / f"{image_id}_{lesion}.tif"
                if mask.is_file():
                    masks[lesion] = mask
                elif lesion in OPTIONAL:
                    masks[lesion] = None
                else:
                    report(problems, f"{mask}: missing {lesion} mask for {path}; IDRiD ships one for every image, "
                                     "so the download is incomplete: re-extract the groundtruth folder")
            out.append(Record(dataset, image_id, image_id, split, path, masks))
    return out
