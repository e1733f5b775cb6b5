"""`micropatch datasets inspect`: what a dataset root holds and what is wrong with it, before a long run."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from micropatch.core.fileio import InputError, read_fundus, read_mask
from micropatch.data.datasets import LESIONS, adapter, load_records, log


def inspect_root(adapter_name: str, root: Path, **options) -> dict:
    """Counts (images, patients, masks, empty masks, resolutions, official splits) and the problems found.

    Every image and mask is decoded, so truncated files and masks of the wrong size are found here. options: the
    adapter's own (datasets.load_records).
    """
    report, problems, notes = {"adapter": adapter_name, "root": str(root)}, [], []
    try:
        module = adapter(adapter_name)
        level = log.level
        log.setLevel(logging.WARNING)  # load_records says which root it found: once, not twice
        try:
            report["dataset_root"] = str(module.resolve_root(Path(root)))
        finally:
            log.setLevel(level)
        notes += [module.NOTE] if hasattr(module, "NOTE") else []  # what the release's layout implies for scoring
        records = load_records(adapter_name, root, adapter_name, problems, **options)
    except InputError as err:
        return report | {"problems": problems + [str(err)], "ok": False}
    resolutions, masks, empty, absent = Counter(), Counter(), Counter(), Counter()
    for record in tqdm(records, desc=f"inspect {adapter_name}", unit="img"):
        try:
            height, width = read_fundus(record.image_path).shape[:2]
        except InputError as err:
            problems.append(str(err))
            continue
        resolutions[f"{width}x{height}"] += 1
        for lesion, path in record.masks.items():
            if path is None:
                absent[lesion] += 1
                continue
            masks[lesion] += 1
            try:
                mask = read_mask(path, (height, width), notes, record.mask_level, record.antialiased)
                empty[lesion] += int(not mask.any())
            except InputError as err:
                problems.append(str(err))
    by_lesion = lambda counter: {lesion: counter[lesion] for lesion in LESIONS}  # noqa: E731
    return report | {
        "images": len(records),
        "patients": len({r.patient_key for r in records}),
        "official_splits": dict(sorted(Counter(r.official_split for r in records).items())),
        "resolutions": dict(resolutions.most_common()),
        "masks": by_lesion(masks),
        "empty_masks": by_lesion(empty),
        "absent_by_documentation": by_lesion(absent),  # no mask file, and the dataset says: no such lesion
        "not_annotated": {lesion: sum(lesion not in r.masks for r in records) for lesion in LESIONS},
        "notes": notes,  # accepted quirks, such as a label map with a few stray values
        "problems": problems,
        "ok": not problems,
    }
