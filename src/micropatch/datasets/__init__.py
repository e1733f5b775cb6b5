"""Dataset adapters: each turns a dataset root in its official layout into a list of Records."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..fileio import InputError

log = logging.getLogger(__name__)

LESIONS = ("MA", "HE", "EX", "SE")
IGNORED_FILES = {"Thumbs.db", ".DS_Store"}  # written by Windows / macOS file browsers into dataset folders


@dataclass(frozen=True)
class Record:
    """One fundus image of a dataset.

    masks maps lesion -> mask path, or -> None where the dataset documents the lesion as absent (empty mask);
    a lesion missing from masks is not annotated by the dataset at all, and is never scored.
    """

    dataset: str
    image_id: str
    patient_key: str
    official_split: str
    image_path: Path
    masks: dict[str, Path | None] = field(default_factory=dict)

    def to_json(self) -> dict:
        """JSON-ready dict with string paths."""
        out = asdict(self)
        out["image_path"] = str(self.image_path)
        out["masks"] = {k: (str(v) if v is not None else None) for k, v in self.masks.items()}
        return out


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
    """The first candidate folder for which holds(folder) is true, logging which one; InputError(hint) if none."""
    for candidate, found in candidates:
        if holds(candidate):
            log.info("%s root %s: found %s", dataset_name, root, found)
            return candidate
    raise InputError(f"{root} is no {dataset_name} root: {hint}")


def report(problems: list[str] | None, message: str) -> None:
    """Raise InputError(message), or append it to problems when a caller collects them (datasets inspect)."""
    if problems is None:
        raise InputError(message)
    problems.append(message)


def adapter(name: str):
    """The adapter module registered under `name` (idrid, ddr, eophtha)."""
    from . import ddr, eophtha, idrid

    adapters = {"idrid": idrid, "ddr": ddr, "eophtha": eophtha}
    if name not in adapters:
        raise InputError(f"unknown dataset adapter '{name}'; choose one of {sorted(adapters)} in params.yaml")
    return adapters[name]


def load_records(adapter_name: str, root: str | Path, dataset: str,
                 problems: list[str] | None = None) -> list[Record]:
    """Records of the dataset at root, read by the named adapter; raises InputError on a broken root.

    With a problems list, a missing mask or duplicate id is appended to it instead of raised.
    """
    records = adapter(adapter_name).records(Path(root), dataset, problems)
    if not records:
        raise InputError(f"{root}: no images found for adapter '{adapter_name}'; is this the dataset's root?")
    seen: dict[str, Path] = {}
    for record in records:
        if record.image_id in seen:
            report(problems, f"duplicate image id '{record.image_id}': {seen[record.image_id]} and "
                             f"{record.image_path}; remove one copy (image ids must be unique within a dataset)")
        seen[record.image_id] = record.image_path
    return records
