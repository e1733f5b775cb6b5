"""DDR adapter: the official 'lesion_segmentation' layout."""
from __future__ import annotations

from pathlib import Path

from micropatch.data.datasets.base import LESIONS, Record, find_root, image_files, report

SEGMENTATION = "lesion_segmentation"
# split folder -> label folder name (sic: the valid split's differs in the official release)
SPLITS = {"train": "label", "valid": "segmentation label", "test": "label"}


def resolve_root(root: Path) -> Path:
    """The 'lesion_segmentation' folder, given it, 'DDR-dataset/' or the folder above that; says which it found."""
    root = Path(root)
    candidates = [(root, "the 'lesion_segmentation' folder itself"),
                  (root / SEGMENTATION, "'DDR-dataset/' (the folder holding 'lesion_segmentation')"),
                  (root / "DDR-dataset" / SEGMENTATION, "the folder holding 'DDR-dataset/'")]
    return find_root(root, candidates, lambda folder: any((folder / split / "image").is_dir() for split in SPLITS),
                     "DDR", f"no '{{train,valid,test}}/image' folder under it, under '{SEGMENTATION}/' or under "
                     f"'DDR-dataset/{SEGMENTATION}/'; point the source at 'DDR-dataset/' (extracted from the joined "
                     "DDR-dataset.zip.001 ... parts) or at its 'lesion_segmentation' folder")


def records(root: Path, dataset: str = "ddr", problems: list[str] | None = None) -> list[Record]:
    """One Record per image of the train, valid and test splits present; all four label files are required."""
    seg = resolve_root(root)
    out = []
    for split, label_folder in SPLITS.items():
        for path in image_files(seg / split / "image", (".jpg", ".jpeg")):
            masks = {}
            for lesion in LESIONS:
                mask = seg / split / label_folder / lesion / f"{path.stem}.tif"
                if mask.is_file():
                    masks[lesion] = mask  # an all-zero label is DDR's "no such lesion", read as such
                else:
                    report(problems, f"{mask}: missing {lesion} label for {path}; DDR ships all four label files "
                                     "for every image, so the extraction is incomplete: re-join and re-extract")
            out.append(Record(dataset, path.stem, path.stem, split, path, masks))
    return out
