"""A camera shift you can build: the record's val photographs and their MA masks resampled to smaller sensors
(2544x1696 and 1440x960, e-ophtha's range) and re-encoded as JPEG quality 75, predicted with and without
infer.rescale_fov, scored at each set's own (native) resolution at the model's operating point.

usage: camera_shift.py --record results/idrid-ma-best [--sizes 2544x1696 1440x960] [--mode fast]
       [--precision fp32] [--quick]     (--quick: 2 images, one 512x340 size; --record . runs on the default)
Prints one line per setting and, last, one JSON object (benchmarks/results/camera_shift.json holds a real run).
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from micropatch import compute

REPO = Path(__file__).resolve().parents[1]


def shifted(rgb: np.ndarray, truth: np.ndarray, size: tuple[int, int] | None, folder: Path, stem: str):
    """(rgb as a camera of `size` would store it: resampled, JPEG q75; truth resampled to it)."""
    if size is None:
        return rgb, truth
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    path = folder / f"{stem}_{size[0]}.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 75])
    from micropatch.fileio import read_fundus

    mask = cv2.resize(truth.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5
    return read_fundus(path), mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--record", type=Path, default=REPO / "results/idrid-ma-best")
    parser.add_argument("--model", type=Path, help="default: the record's data/model/release.safetensors")
    parser.add_argument("--sizes", nargs="+", default=["2544x1696", "1440x960"])
    parser.add_argument("--mode", default="fast")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--compute", default="fast")
    parser.add_argument("--images", type=int, help="the first N val images only (default: all)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    compute.configure(args.compute)
    from micropatch.evaluation import score_images
    from micropatch.fileio import read_fundus, read_png
    from micropatch.inference import DEFAULTS, predict_probability, to_uint8
    from micropatch.model import load_checkpoint
    from micropatch.postprocess import OPERATING_DEFAULTS
    from micropatch.preprocessing import checked_fov, green_clahe
    from micropatch.recipe import resolve
    from micropatch.split import read_manifest

    model, config = load_checkpoint(args.model or args.record / "data/model/release.safetensors")
    point = OPERATING_DEFAULTS | config.get("operating_point", {})
    preprocess = config["preprocess"]
    base = resolve(config, "inference", {"mode": args.mode, "precision": args.precision}, DEFAULTS)
    rows = [r for r in read_manifest(args.record / "data/splits/manifest.csv") if r["split"] == "val"]
    rows = rows[:args.images] if args.images else rows
    sizes = [None] + [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    if args.quick:
        rows, sizes = rows[:2], [None, (512, 340)]
    settings = [("native", None, False)]
    settings += [(f"{w}x{h}", (w, h), rescale) for w, h in sizes[1:] for rescale in (False, True)]
    items = {name: [] for name, _, _ in settings}
    seconds = {name: 0.0 for name, _, _ in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            source = args.record / row["source"]
            rgb = read_fundus(source)
            # the preprocess stage's binarised copy of the release's mask, at the photograph's size
            truth = read_png(args.record / "data/preprocessed" / row["dataset"] / f"{row['image_id']}_MA.png") > 0
            for name, size, rescale in settings:
                key = f"{name}{' rescaled' if rescale else ''}"
                items.setdefault(key, [])
                seconds.setdefault(key, 0.0)
                photo, mask = shifted(rgb, truth, size, Path(tmp), row["image_id"])
                fov = checked_fov(photo, preprocess["fov_threshold"], source)
                enhanced = green_clahe(photo, preprocess["clahe_clip_limit"], preprocess["clahe_grid"])
                started = time.perf_counter()
                probability = predict_probability(model, enhanced, fov, base | {"rescale_fov": rescale})[0]
                seconds[key] += time.perf_counter() - started
                items[key].append((row["image_id"], to_uint8(probability), mask, fov))
                print(f"{row['image_id']} {key}: {photo.shape[1]}x{photo.shape[0]}", file=sys.stderr, flush=True)
    results = {}
    for key, scored in items.items():
        if not scored:
            continue
        summary, _ = score_images(scored, point["threshold"], point["min_area"], bootstrap_draws=100)
        results[key] = {k: summary[k] for k in ("dice", "precision", "recall", "aupr_11", "ap", "lesion_sensitivity",
                                                "fps_per_image", "froc")} | {"seconds": seconds[key]}
        print(f"{key}: Dice {summary['dice']:.4f}, aupr_11 {summary['aupr_11']:.4f}, lesion sensitivity "
              f"{summary['lesion_sensitivity']:.3f}, FPs/image {summary['fps_per_image']:.2f}, {seconds[key]:.0f} s")
    native = results["native"]["dice"]
    for key, value in results.items():
        value["dice_vs_native"] = value["dice"] / native if native else float("nan")
    print(json.dumps({"record": str(args.record.relative_to(REPO) if args.record.is_absolute() else args.record),
                      "images": len(rows), "operating_point": point, "inference": base,
                      "train_fov_diameter": config.get("inference", {}).get("fov_diameter"), "results": results}))


if __name__ == "__main__":
    main()
