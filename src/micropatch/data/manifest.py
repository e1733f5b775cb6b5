"""The split manifest: one row per image (dataset, id, patient key, split, sha256, phash, size,
source), written and read as CSV; the rows of a test domain."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from micropatch.core.fileio import InputError, write_text

MANIFEST_COLUMNS = ("dataset", "image_id", "patient_key", "split", "official_split", "sha256", "phash",
                    "height", "width", "lesion_bearing", "source")


TRAINING_SIDE = ("train", "tune")  # splits whose images decide weights, the epoch or the operating point


# split.test_fraction > 0: each dataset's fixed test images, the same whichever datasets train (the cross-dataset
# study's leave-one-out reads every combination on them)
HELD_OUT = "held_out"


def manifest_csv(rows: list[dict]) -> str:
    """The manifest as CSV text, columns in MANIFEST_COLUMNS order, '\\n' line ends."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_manifest(path: str | Path, rows: list[dict]) -> None:
    """Write the manifest CSV atomically."""
    write_text(path, manifest_csv(rows))


def read_manifest(path: str | Path) -> list[dict]:
    """Manifest rows as dicts of strings (height/width/lesion_bearing as int)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for key in ("height", "width", "lesion_bearing"):
            r[key] = int(r[key])
    return rows


def domain_rows(rows: list[dict], domain: str, spec: dict) -> list[dict]:
    """Manifest rows of a test domain {dataset, split?, official_split?}; refuses one that holds training images."""
    unknown = set(spec) - {"dataset", "split", "official_split"}
    if unknown or "dataset" not in spec:
        raise InputError(f"roles.test_on.{domain}: {spec} needs 'dataset' and may have 'split' and 'official_split' "
                         f"only (unknown: {sorted(unknown)})")
    chosen = [r for r in rows if r["dataset"] == spec["dataset"]
              and r["split"] == spec.get("split", r["split"])
              and r["official_split"] == spec.get("official_split", r["official_split"])]
    if not chosen:
        raise InputError(f"roles.test_on.{domain}: no image of the manifest matches {spec}; check the dataset name "
                         "and split (manifest splits: train, tune, val, test, held_out)")
    trained = [r["image_id"] for r in chosen if r["split"] in TRAINING_SIDE]
    if trained:
        raise InputError(f"roles.test_on.{domain}: {len(trained)} of its images are training images (split train "
                         f"or tune: {trained[:3]}...); give split: val or split: test")
    return chosen
