"""Dataset adapters: each turns a dataset root in its official layout into a list of Records."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..io import InputError

LESIONS = ("MA", "HE", "EX", "SE")


@dataclass(frozen=True)
class Record:
    """One fundus image of a dataset; masks maps lesion -> mask path, or None where the dataset says 'absent'."""

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


def adapter(name: str):
    """The adapter module registered under `name` (idrid, ddr, eophtha)."""
    from . import idrid

    adapters = {"idrid": idrid}
    if name not in adapters:
        raise InputError(f"unknown dataset adapter '{name}'; choose one of {sorted(adapters)} in params.yaml")
    return adapters[name]


def load_records(adapter_name: str, root: str | Path, dataset: str) -> list[Record]:
    """Records of the dataset at root, read by the named adapter; raises InputError on a broken root."""
    records = adapter(adapter_name).records(Path(root), dataset)
    if not records:
        raise InputError(f"{root}: no images found for adapter '{adapter_name}'; is this the dataset's root?")
    seen: dict[str, Path] = {}
    for record in records:
        if record.image_id in seen:
            raise InputError(
                f"duplicate image id '{record.image_id}': {seen[record.image_id]} and {record.image_path}; "
                "remove one copy (image ids must be unique within a dataset)"
            )
        seen[record.image_id] = record.image_path
    return records
