"""MAPLES-DR adapter: the labels archive '{train,test}/<Biomarker>/<stem>.png' plus the MESSIDOR photographs,
which the archive does not hold, from a second root (option `images`), matched by file stem."""
from __future__ import annotations

import logging
from pathlib import Path

from micropatch.core.fileio import InputError
from micropatch.data.datasets.base import Record, find_root, image_files, report
from micropatch.data.sources import resolve

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
LESION_FOLDERS = {"MA": "Microaneurysms", "HE": "Hemorrhages", "EX": "Exudates", "SE": "CottonWoolSpots"}
IMAGE_SUFFIXES = (".tif", ".tiff")
OPTIONS = ("images",)
BESIDE = "MESSIDOR"  # where a self-contained copy keeps the photographs when `images` is not given
NOTE = "MAPLES-DR: no patient IDs (patient key = MESSIDOR stem); masks are 1-bit, > 0 is lesion"


def resolve_root(root: Path) -> Path:
    """The labels folder holding train/ and test/ (the archive has no top folder), given it or its parent
    'MAPLES-DR/'."""
    root = Path(root)
    return find_root(root, [(root, "the extracted labels archive itself"), (root / "MAPLES-DR", "its parent")],
                     lambda folder: any((folder / split / "diagnosis.csv").is_file() for split in SPLITS),
                     "MAPLES-DR", f"no '{{train,test}}/diagnosis.csv' under it or under '{root / 'MAPLES-DR'}'; point "
                     "the source at the extracted MAPLES-DR.zip")


def messidor_images(images: Path) -> dict[str, Path]:
    """stem -> photograph over a MESSIDOR root (its Base11 ... Base34 folders, or any folders below it)."""
    if not images.is_dir():
        raise InputError(f"MAPLES-DR images root {images} is not a folder; give the folder holding the extracted "
                         "MESSIDOR Base11 ... Base34 zips (options: images)")
    found = {}
    for path in sorted(images.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(path.stem, path)
    return found


def records(root: Path, dataset: str = "maples_dr", problems: list[str] | None = None,
            images: str | Path | None = None) -> list[Record]:
    """One Record per labelled image whose MESSIDOR photograph is found; an all-zero mask is an absent lesion."""
    top = resolve_root(root)
    if images is None:  # a self-contained copy (the synthetic fixture's layout) keeps them in MESSIDOR/ beside
        images = next((f for f in (top / BESIDE, Path(root) / BESIDE) if f.is_dir()), None)
        if images is None:
            raise InputError(f"{top}: MAPLES-DR holds labels only; give the MESSIDOR photographs' root as the "
                             "adapter option `images` (params.yaml download.datasets[].options.images, or "
                             f"`micropatch datasets inspect --images`), or put them in '{top / BESIDE}'")
        log.info("MAPLES-DR: photographs from %s", images)
    photographs = messidor_images(resolve(str(images)))
    out, unmatched = [], []
    for split in SPLITS:
        reference = top / split / LESION_FOLDERS["MA"]
        for label in image_files(reference, (".png",)):
            stem = label.stem
            if stem not in photographs:
                unmatched.append(f"{split}/{stem}")
                continue
            masks = {}
            for lesion, folder in LESION_FOLDERS.items():
                mask = top / split / folder / f"{stem}.png"
                if mask.is_file():
                    masks[lesion] = mask
                else:
                    report(problems, f"{mask}: missing {lesion} mask for {stem}; MAPLES-DR ships one per image "
                                     "in every lesion folder: re-extract MAPLES-DR.zip")
            out.append(Record(dataset, stem, stem, split, photographs[stem], masks))
    if unmatched:
        report(problems, f"{len(unmatched)} MAPLES-DR label set(s) have no MESSIDOR photograph under {images} "
                         f"(first: {', '.join(unmatched[:5])}); extract every MESSIDOR Base zip there, or remove "
                         "those labels on purpose")
    return out
