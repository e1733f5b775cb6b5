"""What every dataset adapter shares: the Record of one image and the helpers that find a release's files
(the adapters import these from here, not from the package, which imports the adapters)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from micropatch.core.fileio import InputError

log = logging.getLogger(__name__)

LESIONS = ("MA", "HE", "EX", "SE")
IGNORED_FILES = {"Thumbs.db", ".DS_Store"}  # written by Windows / macOS file browsers into dataset folders


@dataclass(frozen=True)
class Record:
    """One fundus image of a dataset.

    masks maps lesion -> mask path, or -> None where the dataset documents the lesion as absent (empty mask);
    a lesion missing from masks is not annotated by the dataset at all, and is never scored. mask_level: a mask
    value at or above it is lesion (1: any non-zero; Retinal-Lesions 255, FGADR 128); antialiased: the dataset
    documents anti-aliased mask edges, so values between its levels are expected (fileio.read_mask).
    """

    dataset: str
    image_id: str
    patient_key: str
    official_split: str
    image_path: Path
    masks: dict[str, Path | None] = field(default_factory=dict)
    mask_level: int = 1
    antialiased: bool = False


def image_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Image files of a folder whose suffix matches (any case), sorted; warns about unexpected files."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            found.append(path)
        elif path.name not in IGNORED_FILES:
            log.warning("ignoring unexpected %s %s", "folder" if path.is_dir() else "file", path)
    return found


def find_root(root: Path, candidates: list[tuple[Path, str]], holds, dataset_name: str, hint: str) -> Path:
    """The first candidate folder for which holds(folder) is true, logging which one; InputError saying that root
    does not exist, or hint, if none."""
    if not Path(root).exists():
        raise InputError(f"{root}: does not exist; check the path to the {dataset_name} download")
    for candidate, found in candidates:
        if holds(candidate):
            log.info("%s root %s: found %s", dataset_name, root, found)
            return candidate
    raise InputError(f"{root} is no {dataset_name} root: {hint}")


def top_or_parent(root: Path, top: str, marker: str, dataset_name: str) -> Path:
    """The release's top folder `top`, given it or the folder above it, recognised by its `marker` subfolder; says
    which it found, or raises InputError naming both places it looked."""
    root = Path(root)
    return find_root(root, [(root, f"the '{top}' folder itself"), (root / top, "its parent")],
                     lambda folder: (folder / marker).is_dir(), dataset_name,
                     f"neither '{root / marker}' nor '{root / top / marker}' exists; point the source at '{top}/' or "
                     "at the folder holding it")


def report(problems: list[str] | None, message: str) -> None:
    """Raise InputError(message), or append it to problems when a caller collects them (datasets inspect)."""
    if problems is None:
        raise InputError(message)
    problems.append(message)
