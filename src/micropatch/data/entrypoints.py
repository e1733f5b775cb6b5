"""The data phase's pipeline stages (download, preprocess, characterise, patient-split, patchify, audit): what
each stages/*.py script runs, given its parsed arguments (the paths dvc.yaml names); settings from params.yaml."""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from tqdm import tqdm

from micropatch.core import logs
from micropatch.core.fileio import InputError, load_params, read_fundus, write_json, write_text
from micropatch.core.recipe import model_recipe
from micropatch.data.audit import run_audit
from micropatch.data.characterisation import (
    grade_counts,
    labelling_style,
    lesion_statistics,
    quality_grade,
    quality_measures,
)
from micropatch.data.datasets import LESIONS, load_records
from micropatch.data.manifest import HELD_OUT, domain_rows, read_manifest, write_manifest
from micropatch.data.patches import build_patch_set, write_patch_set
from micropatch.data.preprocessing import dataset_summary, preprocess_record
from micropatch.data.sources import Limits, local_sources, materialise
from micropatch.data.split import assign_splits, read_patient_keys
from micropatch.data.square import SQUARE_KIND, build_square_set


def download(args: argparse.Namespace) -> None:
    """stages/download.py: materialise every dataset of params `download.datasets` in <out>/<name>/.

    A source is a local folder, a local archive (.zip, DDR's .zip.001 parts, .tar.gz), an https URL with its sha256,
    or `synthetic` (the generator in the adapter's layout; settings from the entry's `synthetic`). Downloads live in
    --downloads, outside DVC's outputs, so an interrupted one resumes.

    args: the stage script's parsed arguments (the paths dvc.yaml names).
    """
    logs.setup()
    params = load_params(path=args.params)
    declared = Path("dvc.yaml").read_text() if Path("dvc.yaml").is_file() else ""
    missing = [s for s in local_sources(params, Path.cwd()) if f"- {s}\n" not in declared]
    if missing:  # DVC would not notice when these change: the dependency list must be rewritten first
        raise InputError(f"download sources {missing} are not dependencies in dvc.yaml; run `micropatch pipeline` "
                         "after changing download.datasets")
    params = params["download"]
    limits = Limits(int(params["max_extracted_gib"] * 2**30), params["max_extracted_files"])
    datasets = []
    for entry in params["datasets"]:
        root = materialise(entry, args.out / entry["name"], args.downloads, limits)
        options = entry.get("options", {})  # the adapter's own (maples_dr: images; retinal_lesions: ...)
        records = load_records(entry["adapter"], root, entry["name"], **options)  # fail here, not three stages later
        datasets.append({"name": entry["name"], "adapter": entry["adapter"], "root": str(root),
                         "images": len(records), **({"options": options} if options else {})})
        logging.info("download: %s (%s adapter): %d images", entry["name"], entry["adapter"], len(records))
    write_json(args.out / "datasets.json", datasets)


def preprocess(args: argparse.Namespace) -> None:
    """stages/preprocess.py: green channel + CLAHE, FOV mask and binary lesion masks per image; a fingerprint per
    dataset.

    args: the stage script's parsed arguments (the paths dvc.yaml names).
    """
    logs.setup()
    params = load_params("preprocess")
    summaries = {}
    for dataset in json.loads((args.raw / "datasets.json").read_text()):
        records = load_records(dataset["adapter"], dataset["root"], dataset["name"], **dataset.get("options", {}))
        work = partial(preprocess_record, out_dir=args.out / dataset["name"], lesions=list(LESIONS),
                       clip_limit=params["clahe_clip_limit"], grid=params["clahe_grid"],
                       fov_threshold=params["fov_threshold"])
        with ProcessPoolExecutor(params["workers"]) as pool:
            fingerprints = list(tqdm(pool.map(work, records), total=len(records), desc=dataset["name"], unit="img"))
        write_json(args.out / dataset["name"] / "fingerprint.json", {
            "dataset": dataset["name"], "adapter": dataset["adapter"], "images": fingerprints})
        summaries[dataset["name"]] = dataset_summary(fingerprints)
        logging.info("preprocess: %s: %d images, median %s", dataset["name"], len(fingerprints),
                     summaries[dataset["name"]]["median_resolution"])
    write_json(args.summary, summaries)  # the domain gap in numbers: resolution and lesion sizes per dataset


LABELLING_COLUMNS = ("image_id", "lesion", "count", "mean_area_ppm", "log10_count", "log10_mean_area_ppm")  # lesion


# "all": every annotated lesion type of the image together (the style's rule and the scatter), else one type
QUALITY_COLUMNS = ("image_id", "grade", "focus", "brightness", "evenness")


def table(rows: list[dict], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def characterise(args: argparse.Namespace) -> None:
    """stages/characterise.py: each dataset's labelling style (per-image lesion count and mean lesion area, the study's
    figure 2) and image-quality grades (its figure 1, by a transparent measure, not MCF-Net), as metrics and plots.

    args: the stage script's parsed arguments (the paths dvc.yaml names).
    """
    logs.setup()
    fov_threshold = load_params("preprocess")["fov_threshold"]
    summary = {}
    for dataset in json.loads((args.raw / "datasets.json").read_text()):
        name = dataset["name"]
        fingerprints = json.loads((args.preprocessed / name / "fingerprint.json").read_text())["images"]
        points = [{"image_id": fp["image_id"], "lesion": lesion, "count": s["count"],
                   "mean_area_ppm": s["mean_area_ppm"], "log10_count": round(math.log10(s["count"]), 4),
                   "log10_mean_area_ppm": round(math.log10(max(s["mean_area_ppm"], 1e-3)), 4)}
                  for fp in fingerprints for lesion, s in lesion_statistics(fp).items()]
        records = load_records(dataset["adapter"], dataset["root"], name, **dataset.get("options", {}))
        quality = []
        for record in tqdm(records, desc=f"quality {name}", unit="img"):
            measures = quality_measures(read_fundus(record.image_path), fov_threshold)
            quality.append({"image_id": record.image_id, "grade": quality_grade(measures), **measures})
        write_text(args.plots / f"quality_{name}.csv", table(quality, QUALITY_COLUMNS))
        write_text(args.plots / f"labelling_{name}.csv", table([p for p in points if p["lesion"] == "all"],
                                                                LABELLING_COLUMNS))
        write_text(args.plots / f"lesions_{name}.csv", table([p for p in points if p["lesion"] != "all"],
                                                              LABELLING_COLUMNS))
        summary[name] = labelling_style(fingerprints) | {
            "quality": grade_counts([q["grade"] for q in quality]),
            "lesions": {lesion: {"images": len(rows := [p for p in points if p["lesion"] == lesion]),
                                 "count_median": sorted(p["count"] for p in rows)[len(rows) // 2],
                                 "mean_area_ppm_median": sorted(p["mean_area_ppm"] for p in rows)[len(rows) // 2]}
                        for lesion in sorted({p["lesion"] for p in points})}}
        logging.info("characterise: %s: %s labels (%.0f %% of %d images look coarse); quality %s", name,
                     summary[name]["style"], 100 * summary[name]["coarse_share"], summary[name]["images"],
                     summary[name]["quality"])
    write_json(args.out, summary)


def patient_split(args: argparse.Namespace) -> None:
    """stages/patient_split.py: patient-isolated train/val split of the training datasets, before any patch exists.

    args: the stage script's parsed arguments (the paths dvc.yaml names).
    """
    logs.setup()
    params = load_params()
    lesions, split = params["lesions"], params["split"]
    fingerprints = []
    for path in sorted(args.preprocessed.glob("*/fingerprint.json")):
        for fp in json.loads(path.read_text())["images"]:
            fp["lesion_pixels"] = {k: v for k, v in fp["lesion_pixels"].items() if k in lesions}
            fingerprints.append(fp)
    keys = read_patient_keys(split["patient_keys"]) if split.get("patient_keys") else None
    rows = assign_splits(fingerprints, params["roles"]["train_on"], split["val_fraction"], split["seed"], keys,
                         split["merge_near_duplicates"], params["audit"]["phash_threshold"],
                         split["tune_fraction"], split["test_fraction"])
    for domain, spec in params["roles"]["test_on"].items():  # every test domain has images: refused here, before
        try:                                                  # any patch or training, not by infer hours later
            domain_rows(rows, domain, spec)
        except InputError as err:
            hint = (f"; split.test_fraction {split['test_fraction']} holds out no patient of {spec['dataset']}: "
                    "raise it" if spec.get("split") == HELD_OUT else "")
            raise InputError(f"{err}{hint}") from None
    write_manifest(args.out, rows)
    logging.info("patient-split: %s", dict(Counter((r["dataset"], r["split"]) for r in rows)))


def squares(rows: list[dict], preprocessed: Path, lesions: list[str], baseline: dict, out: Path, split: str) -> None:
    """Recipe study_baseline: one square per image (the FOV crop resized and padded to `side`), the crops drawn at
    train time; meta.json says so (kind: squares), and the audit reads its index like any patch set's."""
    if not 0 < baseline["patch"] <= baseline["side"]:
        raise ValueError(f"study_baseline.patch {baseline['patch']} must be in 1..side ({baseline['side']})")
    images, masks, index, frames = build_square_set(rows, preprocessed, lesions, baseline["side"])
    meta = {"kind": SQUARE_KIND, "split": split, "lesions": lesions, "side": baseline["side"],
            "patch": baseline["patch"], "crops_per_image": baseline["crops_per_image"], "augment": baseline["augment"],
            "patches": len(index), "lesion_patches": sum(1 for r in index if r["lesion_pixels"] > 0),
            "frames": frames}
    write_patch_set(out, images, masks, index, meta)
    logging.info("patchify %s: %d squares of %d px (recipe study_baseline)", split, len(index), baseline["side"])


def patchify(args: argparse.Namespace) -> None:
    """stages/patchify.py: 128x128 windows every 64 px of each train/tune/val image; all lesion windows, 10 % of
    background
    (the paper's sampling), plus hard negatives and lesion-centred windows for the train split when params ask. Under
    `recipe: study_baseline`, one square per image instead (micropatch.square), which train crops at random.

    args: the stage script's parsed arguments (the paths dvc.yaml names).
    """
    logs.setup()
    everything = load_params()
    params, lesions, recipe = everything["patchify"], everything["lesions"], model_recipe(everything)
    manifest = read_manifest(args.manifest)
    splits = ["train", "val"] + (["tune"] if any(r["split"] == "tune" for r in manifest) else [])
    for split in splits:
        rows = [r for r in manifest if r["split"] == split]
        if recipe == "study_baseline":
            squares(rows, args.preprocessed, lesions, everything["study_baseline"], args.out / split, split)
            continue
        # the extras only where weights are fitted: selection splits keep the plain sampling, whose background
        # windows then stand for the whole image at weight 1 / background_keep (training.weighted_histograms)
        extras = (params["hard_negative_keep"], params["lesion_jitter"]) if split == "train" else (0.0, 0)
        images, masks, index, per_image = build_patch_set(rows, args.preprocessed, lesions, params["size"],
                                                          params["stride"], params["background_keep"], params["seed"],
                                                          *extras, scale=params["scale"])
        meta = {"split": split, "lesions": lesions, "size": params["size"], "stride": params["stride"],
                "background_keep": params["background_keep"], "seed": params["seed"],
                "hard_negative_keep": extras[0], "lesion_jitter": extras[1], "patches": len(index),
                "lesion_patches": sum(1 for r in index if r["lesion_pixels"] > 0), "per_image": per_image}
        meta |= {} if params["scale"] == 1.0 else {"scale": params["scale"]}  # the method's sets stay as they were
        write_patch_set(args.out / split, images, masks, index, meta)
        logging.info("patchify %s: %d patches (%d with lesion) from %d images", split, meta["patches"],
                     meta["lesion_patches"], len(per_image))


def audit(args: argparse.Namespace) -> int:
    """stages/audit.py: fail the pipeline on any patient, byte, near-duplicate or patch-provenance leak across splits.

    args: the stage script's parsed arguments (the paths dvc.yaml names).
    """
    logs.setup()
    return run_audit(args.manifest, args.patches, args.out, load_params("audit")["phash_threshold"])
