"""FGADR Seg-set adapter: 'Seg-set/Original_Images/<NNNN_k>.png' with one mask folder per lesion (SPEC.md)."""
from __future__ import annotations

from pathlib import Path

from micropatch.data.datasets.base import Record, image_files, report, top_or_parent

TOP, IMAGES = "Seg-set", "Original_Images"
# sic: the release spells the haemorrhage folder "Hemohedge"; IRMA_Masks and Neovascularization_Masks (files only
# where present) hold lesions micropatch does not segment
LESION_FOLDERS = {"MA": "Microaneurysms_Masks", "HE": "Hemohedge_Masks", "EX": "HardExudate_Masks",
                  "SE": "SoftExudate_Masks"}
# Masks are 8-bit (or RGB with equal channels), 255 = lesion, with anti-aliased edges (1-254): lesion at >= 128
MASK_LEVEL = 128
NOTE = (f"FGADR masks have anti-aliased edges: binarised at >= {MASK_LEVEL}; no official split and no patient IDs "
        "(patient key = image stem, the duplicate audit is the safety net)")


def resolve_root(root: Path) -> Path:
    """The 'Seg-set' folder, given it or the folder above it; says which it found."""
    return top_or_parent(root, TOP, IMAGES, "FGADR")


def records(root: Path, dataset: str = "fgadr", problems: list[str] | None = None) -> list[Record]:
    """One Record per image; the MA, HE, EX and SE mask files exist for every image (all-zero where absent)."""
    top = resolve_root(root)
    out = []
    for path in image_files(top / IMAGES, (".png",)):
        masks = {}
        for lesion, folder in LESION_FOLDERS.items():
            mask = top / folder / path.name
            if mask.is_file():
                masks[lesion] = mask
            else:
                report(problems, f"{mask}: missing {lesion} mask for {path}; FGADR ships one for every image "
                                 "(all-zero where the lesion is absent), so the extraction is incomplete: "
                                 "re-extract Seg-set")
        out.append(Record(dataset, path.stem, path.stem, "all", path, masks, MASK_LEVEL, antialiased=True))
    return out
