"""A camera shift you can build: a record's photographs and their MA masks resampled to smaller sensors and re-encoded
as JPEG quality 75, predicted as `micropatch predict` predicts them with --rescale-fov off, on and auto (its
default), each scored at the shifted photograph's own resolution at the model's operating point (its minimum area
scaled where the photograph is rescaled, as predict scales it).

Sizes: 2544x1696 and 1440x960 are e-ophtha's range; 0.95x, 0.9x, 0.8x and 0.7x of IDRiD's 4288x2848 are where
the auto tolerance is chosen. Choose on --split tune (never val); report val.

usage: camera_shift.py [--model models/idrid-ma/model.safetensors] [--manifest results/idrid-ma-v2/data/splits/
       manifest.csv] [--split tune|val] [--sizes 4074x2706 ...] [--quick]
       (MICROPATCH_IDRID names the IDRiD copy; --quick: the default pipeline's model and data, 2 images, 1 size)
Prints one line per setting and, last, one JSON object (benchmarks/results/camera_shift_<split>.json hold real runs).
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from micropatch.core import compute
from micropatch.core.fileio import sha256_file
from micropatch.core.recipe import AUTO_RESCALE_TOLERANCE

REPO = Path(__file__).resolve().parents[1]
SIZES = ["4074x2706", "3860x2563", "3430x2278", "3002x1994", "2544x1696", "1440x960"]
TOLERANCES = (0.02, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25)
SUMMARY_KEYS = ("dice", "precision", "recall", "aupr_11", "ap", "lesion_sensitivity", "fps_per_image", "froc")


def shifted(rgb: np.ndarray, truth: np.ndarray, size: tuple[int, int] | None, folder: Path, stem: str):
    """(rgb as a camera of `size` would store it: resampled, JPEG q75; truth resampled to it)."""
    from micropatch.core.fileio import read_fundus

    if size is None:
        return rgb, truth
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    path = folder / f"{stem}_{size[0]}.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 75])
    mask = cv2.resize(truth.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5
    return read_fundus(path), mask


def photographs(args) -> list[tuple[str, Path, Path]]:
    """(image id, photograph, MA mask) of the manifest's split, from the IDRiD copy (or the default's raw data)."""
    from micropatch.data.manifest import read_manifest

    rows = [r for r in read_manifest(args.manifest) if r["split"] == args.split]
    if args.quick:
        root = REPO / "data/raw/synthetic"
    else:
        root = Path(os.environ.get("MICROPATCH_IDRID") or REPO.parent / "shared/datasets/IDRiD")
        if not (root / "A. Segmentation").is_dir():
            sys.exit(f"camera_shift.py: no IDRiD copy at {root}: set MICROPATCH_IDRID to the folder holding "
                     "'A. Segmentation'")
    images = root / "A. Segmentation/1. Original Images/a. Training Set"
    masks = root / "A. Segmentation/2. All Segmentation Groundtruths/a. Training Set/1. Microaneurysms"
    rows = rows[:args.images] if args.images else rows
    return [(r["image_id"], images / f"{r['image_id']}.jpg", masks / f"{r['image_id']}_MA.tif") for r in rows]


def tolerance_choice(results: dict, sizes: list[str], native_diameter: int, train_diameter: int) -> dict:
    """For each size, whether rescaling (on) beat not rescaling (off) in pooled Dice, and the largest tolerance of
    TOLERANCES under which auto makes the better choice at every size (the FOV diameter ratio decides)."""
    better = {}
    for size in sizes:
        ratio = int(size.split("x")[0]) / 4288 * native_diameter / train_diameter
        better[size] = {"fov_ratio": round(ratio, 3), "on_minus_off_dice": results[f"{size} on"]["dice"]
                        - results[f"{size} off"]["dice"]}
    fine = [t for t in TOLERANCES
            if all((abs(b["fov_ratio"] - 1) > t) == (b["on_minus_off_dice"] > 0) for b in better.values())]
    return {"by_size": better, "tolerances_tried": list(TOLERANCES), "tolerances_right_at_every_size": fine}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=REPO / "models/idrid-ma/model.safetensors")
    parser.add_argument("--manifest", type=Path, default=REPO / "results/idrid-ma-v2/data/splits/manifest.csv")
    parser.add_argument("--split", default="tune", choices=("tune", "val"))
    parser.add_argument("--sizes", nargs="+", default=SIZES)
    parser.add_argument("--runtime", default="openvino", help="predict's default")
    parser.add_argument("--precision", default="int8", help="predict's default (the model's int8 export)")
    parser.add_argument("--images", type=int, help="the first N images of the split only (default: all)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.model, args.manifest = REPO / "data/model/release.safetensors", REPO / "data/splits/manifest.csv"
        args.split, args.sizes, args.images, args.runtime, args.precision = "val", ["512x340"], 2, "torch", "fp32"
    compute.configure("fast")
    from micropatch.core.fileio import read_fundus, read_mask
    from micropatch.data.preprocessing import checked_fov, green_clahe
    from micropatch.evaluation.metrics import to_uint8
    from micropatch.evaluation.postprocess import scaled_min_area
    from micropatch.evaluation.score import score_images
    from micropatch.inference.modes import fov_scale, predict_probability
    from micropatch.inference.predict import resolve_settings
    from micropatch.inference.runtimes import load_model

    model, config = load_model(args.model, args.runtime, args.precision)
    none = {"threshold": None, "min_area": None}
    point, base, preprocess = resolve_settings(config, none, {}, {}, args.runtime, args.precision)
    train_diameter = base.get("fov_diameter")
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    items, seconds, diameters = {}, {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for image_id, source, mask_path in photographs(args):
            rgb = read_fundus(source)
            truth = read_mask(mask_path, rgb.shape[:2])
            for size in [None, *sizes]:
                photo, mask = shifted(rgb, truth, size, Path(tmp), image_id)
                fov = checked_fov(photo, preprocess["fov_threshold"], source)
                enhanced = green_clahe(photo, preprocess["clahe_clip_limit"], preprocess["clahe_grid"])
                for setting in (["native"] if size is None else ["off", "on"]):
                    params = base | {"rescale_fov": setting == "on"}
                    diameter, scale = fov_scale(fov, params)
                    if size is None:
                        diameters.append(diameter)
                    started = time.perf_counter()
                    probability = to_uint8(predict_probability(model, enhanced, fov, params)[0])
                    key = "native" if size is None else f"{size[0]}x{size[1]} {setting}"
                    seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - started
                    items.setdefault(key, []).append((image_id, probability, mask, fov,
                                                      scaled_min_area(point["min_area"], scale)))
                    if size is not None:  # auto: predict's default, which of the two it picks for this FOV
                        auto = fov_scale(fov, base | {"rescale_fov": "auto"})[1] != 1.0
                        if auto == (setting == "on"):
                            items.setdefault(f"{size[0]}x{size[1]} auto", []).append(items[key][-1])
                print(f"{image_id} {key}: {photo.shape[1]}x{photo.shape[0]}, FOV {diameter} px, scale {scale:.2f}",
                      file=sys.stderr, flush=True)
    results = {}
    for key, scored in items.items():
        min_areas = {image_id: min_area for image_id, *_, min_area in scored}
        summary, _ = score_images([item[:4] for item in scored], point["threshold"], point["min_area"],
                                  bootstrap_draws=100, min_areas=min_areas)
        results[key] = {k: summary[k] for k in SUMMARY_KEYS} | {"seconds": seconds.get(key)}
        print(f"{key}: Dice {summary['dice']:.4f}, AP {summary['ap']:.4f}, aupr_11 {summary['aupr_11']:.4f}, "
              f"lesion sensitivity {summary['lesion_sensitivity']:.3f}, FPs/image {summary['fps_per_image']:.2f}")
    native = results["native"]["dice"]
    for value in results.values():
        value["dice_vs_native"] = value["dice"] / native if native else float("nan")
    print(json.dumps({"model": str(args.model.relative_to(REPO) if args.model.is_absolute() else args.model),
                      "model_sha256": sha256_file(args.model),  # the model card quotes only its own file's figures
                      "split": args.split, "images": len(diameters), "operating_point": point, "inference": base,
                      "auto_rescale_tolerance": AUTO_RESCALE_TOLERANCE, "train_fov_diameter": train_diameter,
                      "native_fov_diameter_median": int(np.median(diameters)),
                      "choice": tolerance_choice(results, args.sizes, int(np.median(diameters)), train_diameter)
                      if train_diameter and not args.quick else None, "results": results}))


if __name__ == "__main__":
    main()
