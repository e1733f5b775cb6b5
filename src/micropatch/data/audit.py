"""The leakage audit: no patient, image hash or near-duplicate in two splits, and no patch
set holding an image of another split; leakage.json and a report; exit 1 on any leak."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from micropatch.core.fileio import write_json, write_text
from micropatch.core.provenance import versions
from micropatch.data.duplicates import PHASH_THRESHOLD, near_duplicate_pairs
from micropatch.data.manifest import read_manifest
from micropatch.data.patches import read_patch_index

COUNTS = ("patient_key_in_two_splits", "identical_bytes_in_two_splits", "near_duplicates_in_two_splits",
          "patches_from_another_split", "eval_images_in_train_patches", "patches_from_unknown_images")


@dataclass(frozen=True)
class Leak:
    """One leak: its kind, the two things involved (paths or patch coordinates) and a detail."""

    kind: str
    first: str
    second: str
    detail: str


def _label(row: dict) -> str:
    return f"{row['dataset']}/{row['image_id']} [{row['split']}] {row['source']}"


def audit_manifest(rows: list[dict], threshold: int = PHASH_THRESHOLD) -> list[Leak]:
    """Image-level leaks: a patient, identical bytes or a near-duplicate pair on two sides (across datasets too)."""
    leaks = []
    by_patient, by_bytes = defaultdict(list), defaultdict(list)
    for row in rows:
        by_patient[(row["dataset"], row["patient_key"])].append(row)
        by_bytes[row["sha256"]].append(row)
    for (dataset, patient), members in sorted(by_patient.items()):
        for a, b in combinations(members, 2):
            if a["split"] != b["split"]:
                leaks.append(Leak("patient_key_in_two_splits", _label(a), _label(b), f"patient {dataset}/{patient}"))
    for digest, members in sorted(by_bytes.items()):
        for a, b in combinations(members, 2):
            if a["split"] != b["split"]:
                leaks.append(Leak("identical_bytes_in_two_splits", _label(a), _label(b), f"sha256 {digest[:16]}…"))
    for i, j, distance in near_duplicate_pairs(rows, threshold):
        a, b = rows[i], rows[j]
        if a["split"] != b["split"] and a["sha256"] != b["sha256"]:
            leaks.append(Leak("near_duplicates_in_two_splits", _label(a), _label(b),
                              f"perceptual-hash distance {distance} <= {threshold}"))
    return leaks


def audit_patches(rows: list[dict], patch_sets: dict[str, list[dict]]) -> list[Leak]:
    """Patch-level leaks: a patch whose source image is not in its patch set's split."""
    split_of = {(r["dataset"], r["image_id"]): r for r in rows}
    leaks = []
    for split, index in sorted(patch_sets.items()):
        for n, patch in enumerate(index):
            where = f"{split} patch #{n} ({patch['dataset']}/{patch['image_id']} at y={patch['y']}, x={patch['x']})"
            source = split_of.get((patch["dataset"], patch["image_id"]))
            if source is None:
                leaks.append(Leak("patches_from_unknown_images", where, "not in the manifest", "unknown source"))
            elif source["split"] != split:
                evaluated = source["split"] in ("val", "test", "held_out")
                kind = ("eval_images_in_train_patches" if split == "train" and evaluated
                        else "patches_from_another_split")
                leaks.append(Leak(kind, where, _label(source), f"source image is in '{source['split']}'"))
    return leaks


def summary(leaks: list[Leak], rows: list[dict], patch_sets: dict[str, list[dict]], threshold: int) -> dict:
    """The leakage metric: a count per check (all 0 on a clean split) and what was checked."""
    counts = {kind: sum(leak.kind == kind for leak in leaks) for kind in COUNTS}
    return counts | {"total_leaks": len(leaks), "images": len(rows),
                     "image_pairs_checked": len(rows) * (len(rows) - 1) // 2,
                     "patches_checked": sum(len(v) for v in patch_sets.values()), "phash_threshold": threshold}


def report(leaks: list[Leak], counts: dict) -> str:
    """Readable markdown report naming both files of every leak."""
    lines = ["# Leakage audit", "", f"{counts['images']} images ({counts['image_pairs_checked']} pairs), "
             f"{counts['patches_checked']} patches checked; near-duplicate threshold {counts['phash_threshold']} bits.",
             "", "| check | leaks |", "|---|---|"]
    lines += [f"| {kind} | {counts[kind]} |" for kind in COUNTS]
    lines += ["", "CLEAN: no leak found." if not leaks else f"**{len(leaks)} LEAKS**:", ""]
    lines += [f"- {leak.kind}: {leak.first}  <->  {leak.second} ({leak.detail})" for leak in leaks]
    return "\n".join(lines) + "\n"


def run_audit(manifest: Path, patches: Path | None, out_dir: Path, threshold: int) -> int:
    """Audit a manifest (and the patch sets under `patches`), write leakage.json + report; 1 on any leak."""
    rows = read_manifest(manifest)
    patch_sets = {}
    if patches:
        for index in sorted(Path(patches).glob("*/index.csv")):
            patch_sets[index.parent.name] = read_patch_index(index.parent)
    leaks = audit_manifest(rows, threshold) + audit_patches(rows, patch_sets)
    counts = summary(leaks, rows, patch_sets, threshold)
    text = report(leaks, counts)
    write_json(Path(out_dir) / "leakage.json", counts | {"versions": versions()})
    write_text(Path(out_dir) / "leakage_report.md", text)
    print(text, end="")
    return 1 if leaks else 0
