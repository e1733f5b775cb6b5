"""Retinal-Lesions (fundus-dr1593) adapter: 'retinal-lesions-v20191227/{images_896x896,lesion_segs_896x896}/'."""
from __future__ import annotations

import re
from pathlib import Path

from micropatch.data.datasets.base import Record, image_files, top_or_parent

TOP, IMAGES, SEGS = "retinal-lesions-v20191227", "images_896x896", "lesion_segs_896x896"
# Lesion file stems; a file exists only where the lesion is present (vitreous / preretinal haemorrhage,
# neovascularisation and fibrous proliferation are not segmented by micropatch)
LESION_FILES = {"MA": "microaneurysm", "HE": "retinal_hemorrhage", "EX": "hard_exudate", "SE": "cotton_wool_spots"}
# 255 = lesion; 127 = a lesion that does not comply with the AAO guidelines, excluded by the authors
LESION, UNCERTAIN = 255, 127
IMAGE_NAME = re.compile(r"^(?P<patient>.+)_(left|right)$")
OPTIONS = ("uncertain_as_lesion",)
NOTE = ("Retinal-Lesions images are cropped to the FOV and resized to 896x896 by the release: not native "
        "resolution; value 127 (non-AAO-compliant lesion) is not lesion unless uncertain_as_lesion")


def resolve_root(root: Path) -> Path:
    """The 'retinal-lesions-v20191227' folder, given it or the folder above it; says which it found."""
    return top_or_parent(root, TOP, IMAGES, "Retinal-Lesions")


def records(root: Path, dataset: str = "retinal_lesions", problems: list[str] | None = None,
            uncertain_as_lesion: bool = False) -> list[Record]:
    """One Record per image. A lesion without a file is absent (an empty truth), as is every lesion of an image
    without a mask folder. patient_key is the Kaggle ID before _left / _right: both eyes share a split."""
    top = resolve_root(root)
    level = UNCERTAIN if uncertain_as_lesion else LESION
    out = []
    for path in image_files(top / IMAGES, (".jpg", ".jpeg", ".png")):
        match = IMAGE_NAME.match(path.stem)
        patient = match.group("patient") if match else path.stem
        masks = {}
        for lesion, stem in LESION_FILES.items():
            mask = top / SEGS / path.stem / f"{stem}.png"
            masks[lesion] = mask if mask.is_file() else None
        out.append(Record(dataset, path.stem, patient, "all", path, masks, level))
    return out
