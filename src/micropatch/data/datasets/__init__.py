"""Dataset adapters: each turns a dataset root in its official layout into a list of Records."""
from __future__ import annotations

import logging
from pathlib import Path

from micropatch.core.fileio import InputError

# the adapters' shared pieces live in base (the adapters import them from there: this package imports the
# adapters); re-exported here, the package's public names
from micropatch.data.datasets.base import IGNORED_FILES, LESIONS, Record, find_root, image_files, report, top_or_parent

log = logging.getLogger(__name__)

ADAPTERS = ("idrid", "ddr", "eophtha", "fgadr", "maples_dr", "retinal_lesions")


def adapter(name: str):
    """The adapter module registered under `name` (idrid, ddr, eophtha, fgadr, maples_dr, retinal_lesions)."""
    from micropatch.data.datasets import ddr, eophtha, fgadr, idrid, maples_dr, retinal_lesions  # dvc.yaml deps

    modules = {"idrid": idrid, "ddr": ddr, "eophtha": eophtha, "fgadr": fgadr, "maples_dr": maples_dr,
               "retinal_lesions": retinal_lesions}
    if name not in modules:
        raise InputError(f"unknown dataset adapter '{name}'; choose one of {sorted(modules)} in params.yaml")
    return modules[name]


def load_records(adapter_name: str, root: str | Path, dataset: str, problems: list[str] | None = None,
                 **options) -> list[Record]:
    """Records of the dataset at root, read by the named adapter; raises InputError on a broken root.

    With a problems list, a missing mask or duplicate id is appended to it instead of raised. options: the
    adapter's own (params.yaml `download.datasets[].options`): maples_dr `images` (the MESSIDOR root),
    retinal_lesions `uncertain_as_lesion`.
    """
    module = adapter(adapter_name)
    unknown = set(options) - set(getattr(module, "OPTIONS", ()))
    if unknown:
        raise InputError(f"adapter '{adapter_name}' has no option(s) {sorted(unknown)}; it takes "
                         f"{sorted(getattr(module, 'OPTIONS', ())) or 'none'}")
    records = module.records(Path(root), dataset, problems, **options)
    if not records:
        raise InputError(f"{root}: no images found for adapter '{adapter_name}'; is this the dataset's root?")
    seen: dict[str, Path] = {}
    for record in records:
        if record.image_id in seen:
            report(problems, f"duplicate image id '{record.image_id}': {seen[record.image_id]} and "
                             f"{record.image_path}; remove one copy (image ids must be unique within a dataset)")
        seen[record.image_id] = record.image_path
    return records


__all__ = ["ADAPTERS", "IGNORED_FILES", "LESIONS", "Record", "adapter", "find_root", "image_files",
           "load_records", "report", "top_or_parent"]
