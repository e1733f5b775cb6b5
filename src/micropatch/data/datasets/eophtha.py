"""e-ophtha MA adapter: the official 'e_optha_MA/{MA,Annotation_MA,healthy}/<patient>/' layout."""
from __future__ import annotations

from pathlib import Path

from micropatch.data.datasets.base import Record, find_root, image_files, report

TOP = "e_optha_MA"
WITH_MA, ANNOTATIONS, HEALTHY = "MA", "Annotation_MA", "healthy"


def resolve_root(root: Path) -> Path:
    """The 'e_optha_MA' folder, given it or the folder above it; says which it found."""
    root = Path(root)
    return find_root(root, [(root, "the 'e_optha_MA' folder itself"), (root / TOP, "its parent")],
                     lambda folder: (folder / WITH_MA).is_dir() or (folder / HEALTHY).is_dir(), "e-ophtha MA",
                     f"neither '{root / WITH_MA}' nor '{root / TOP / WITH_MA}' exists; point the source at '{TOP}/' "
                     "or at the folder holding it")


def records(root: Path, dataset: str = "eophtha", problems: list[str] | None = None) -> list[Record]:
    """One Record per image; patient_key is the patient folder; healthy images have no MA (an empty mask).

    e-ophtha MA annotates MA only, so the records carry no HE/EX/SE masks: those classes are unknown, not absent.
    """
    top = resolve_root(root)
    out = []
    for folder in (WITH_MA, HEALTHY):
        if not (top / folder).is_dir():
            continue
        for patient in sorted(p for p in (top / folder).iterdir() if p.is_dir()):
            for path in image_files(patient, (".jpg", ".jpeg")):
                mask = top / ANNOTATIONS / patient.name / f"{path.stem}.png"
                if folder == HEALTHY:
                    masks = {"MA": None}
                elif mask.is_file():
                    masks = {"MA": mask}
                else:
                    masks = {}
                    report(problems, f"{mask}: missing MA annotation for {path}; every image under '{WITH_MA}/' "
                                     "has one: re-extract the archive")
                out.append(Record(dataset, path.stem, patient.name, "all", path, masks))
    return out
