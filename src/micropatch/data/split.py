"""Patient-isolated splits, made before any patch exists: patient groups (near-duplicates
merged), val chosen per dataset among lesion-bearing groups, an optional tune split and
held-out test images."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from micropatch.core.fileio import InputError
from micropatch.data.duplicates import PHASH_THRESHOLD, near_duplicate_pairs
from micropatch.data.manifest import HELD_OUT


def read_patient_keys(path: str | Path) -> dict[str, str]:
    """image_id -> patient_key from a user's CSV with columns image_id, patient_key."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"image_id", "patient_key"} <= set(reader.fieldnames):
            raise InputError(f"{path}: patient-key CSV needs the columns image_id,patient_key")
        return {row["image_id"]: row["patient_key"] for row in reader}


def choose_val_groups(groups: list[str], positive: set[str], val_fraction: float, seed: int) -> set[str]:
    """Seeded choice of round(val_fraction * len(groups)) groups, stratified by lesion-bearing vs not."""
    rng = np.random.default_rng(seed)
    n_val = int(round(val_fraction * len(groups)))
    pos = sorted(g for g in groups if g in positive)
    neg = sorted(g for g in groups if g not in positive)
    n_val_pos = int(round(n_val * len(pos) / max(1, len(groups))))
    if len(pos) >= 2 and n_val >= 1:
        n_val_pos = min(max(n_val_pos, 1), len(pos) - 1)  # both sides must see lesion-bearing images
    n_val_neg = min(n_val - n_val_pos, len(neg))
    chosen = [pos[i] for i in rng.permutation(len(pos))[:n_val_pos]]
    chosen += [neg[i] for i in rng.permutation(len(neg))[:n_val_neg]]
    return set(chosen)


def merge_duplicate_groups(pool: list[dict], group_of: dict[int, str], phash_threshold: int) -> dict[int, str]:
    """Union of patient groups linked by identical bytes or near-duplicate images: row index -> merged group."""
    parent = {g: g for g in group_of.values()}

    def find(g: str) -> str:
        while parent[g] != g:
            g = parent[g] = parent[parent[g]]
        return g

    links = [(i, j) for i, j, _ in near_duplicate_pairs(pool, phash_threshold)]
    first_with = {}
    for i, row in enumerate(pool):
        links.append((first_with.setdefault(row["sha256"], i), i))
    for i, j in links:
        a, b = find(group_of[i]), find(group_of[j])
        if a != b:
            parent[max(a, b)] = min(a, b)
    return {i: find(g) for i, g in group_of.items()}


def assign_splits(fingerprints: list[dict], train_on: list[str], val_fraction: float, seed: int,
                  patient_keys: dict[str, str] | None = None, merge_near_duplicates: bool = True,
                  phash_threshold: int | None = None, tune_fraction: float = 0.0,
                  test_fraction: float = 0.0) -> list[dict]:
    """Manifest rows: train-role images split train/val by patient, official test images and other datasets 'test'.

    tune_fraction > 0 moves that fraction of the train side's patient groups into 'tune', an inner split that is
    never trained on: the train stage selects its epoch there, and the operating point is chosen there, so the
    val images stay untouched until scoring.

    With merge_near_duplicates, images with identical bytes or near-identical fundus (within phash_threshold
    bits: the audit's own threshold, params `audit.phash_threshold`) join one patient group, so unlabelled
    duplicates of one eye never straddle train and val.

    test_fraction > 0 first holds out that fraction of every dataset's patient groups (official test images aside)
    as HELD_OUT, chosen per dataset from its own images and split.seed only, so a dataset's held-out images are the
    same whichever datasets train: the cross-dataset study scores every training combination on them.
    """
    phash_threshold = PHASH_THRESHOLD if phash_threshold is None else phash_threshold
    rows = []
    for fp in fingerprints:
        row = {k: fp[k] for k in ("dataset", "image_id", "patient_key", "official_split", "sha256", "phash",
                                  "height", "width", "source")}
        if patient_keys and fp["image_id"] in patient_keys:
            row["patient_key"] = patient_keys[fp["image_id"]]
        row["lesion_bearing"] = int(any(v > 0 for v in fp["lesion_pixels"].values()))
        rows.append(row)
    held_out = held_out_images(rows, test_fraction, seed, merge_near_duplicates, phash_threshold)
    pool = sorted((r for r in rows if r["dataset"] in train_on and r["official_split"] != "test"
                   and id(r) not in held_out), key=lambda r: (r["dataset"], r["image_id"]))
    group_of = patient_groups(pool, merge_near_duplicates, phash_threshold)
    groups = sorted(set(group_of.values()))
    positive = {group_of[i] for i, r in enumerate(pool) if r["lesion_bearing"]}
    val = choose_val_groups(groups, positive, val_fraction, seed)
    for r in rows:
        r["split"] = HELD_OUT if id(r) in held_out else "test"
    tune = set()
    if tune_fraction > 0:
        rest = [g for g in groups if g not in val]
        tune = choose_val_groups(rest, positive & set(rest), tune_fraction, seed + 1)
    for i, r in enumerate(pool):
        r["split"] = "val" if group_of[i] in val else "tune" if group_of[i] in tune else "train"
    return sorted(rows, key=lambda r: (r["dataset"], r["image_id"]))


def patient_groups(pool: list[dict], merge_near_duplicates: bool, phash_threshold: int) -> dict[int, str]:
    """Row index -> patient group of a pool of rows: (dataset, patient_key), merged over duplicates if asked."""
    group_of = {i: f"{r['dataset']}\x00{r['patient_key']}" for i, r in enumerate(pool)}
    return merge_duplicate_groups(pool, group_of, phash_threshold) if merge_near_duplicates else group_of


def held_out_images(rows: list[dict], test_fraction: float, seed: int, merge_near_duplicates: bool,
                    phash_threshold: int) -> set[int]:
    """id() of the rows held out as HELD_OUT: test_fraction of each dataset's patient groups (its official test
    images aside), stratified by lesion-bearing, chosen from that dataset's rows and the seed alone."""
    if not test_fraction:
        return set()
    if not 0 < test_fraction < 1:
        raise ValueError(f"split.test_fraction {test_fraction} must be in [0, 1)")
    chosen = set()
    for dataset in sorted({r["dataset"] for r in rows}):
        pool = sorted((r for r in rows if r["dataset"] == dataset and r["official_split"] != "test"),
                      key=lambda r: r["image_id"])
        group_of = patient_groups(pool, merge_near_duplicates, phash_threshold)
        positive = {group_of[i] for i, r in enumerate(pool) if r["lesion_bearing"]}
        held = choose_val_groups(sorted(set(group_of.values())), positive, test_fraction, seed + 2)
        chosen |= {id(r) for i, r in enumerate(pool) if group_of[i] in held}
    return chosen
