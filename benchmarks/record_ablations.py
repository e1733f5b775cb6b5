"""What each inference-side choice of a real-IDRiD record is worth on its 11 val images, from the record's own
val maps (no retraining): the paper's operating point (0.5, no area filter), the tune split's threshold alone,
the tune split's full point (the record), and, with --tta, flip test-time augmentation at that point (a new
inference of the val images with infer.tta flips, in the record's infer mode).

usage: record_ablations.py [--record results/idrid-ma-best] [--domain idrid_val] [--tta] [--quick]
Prints one line per row and, last, one JSON object (benchmarks/results/record_ablations.json holds a real run).
"""
import argparse
import json
import sys
import time
from pathlib import Path

from micropatch.core import compute

REPO = Path(__file__).resolve().parents[1]
KEYS = ("dice", "precision", "recall", "aupr_11", "ap", "lesion_sensitivity", "fps_per_image", "froc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--record", type=Path, default=REPO / "results/idrid-ma-best")
    parser.add_argument("--domain", default="idrid_val", help="a roles.test_on domain scored on the record's "
                                                                 "val split")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--tta-images", type=int, help="flip TTA on the first N val images only (4x inference each); "
                                                       "its row is then compared with the stored maps of those N")
    parser.add_argument("--quick", action="store_true", help="3 val images")
    args = parser.parse_args()
    compute.configure("fast")
    from micropatch.core.fileio import load_params, read_png
    from micropatch.core.recipe import resolve
    from micropatch.data.manifest import read_manifest
    from micropatch.evaluation.metrics import to_uint8
    from micropatch.evaluation.score import score_images
    from micropatch.inference.modes import DEFAULTS, predict_probability
    from micropatch.training.network import load_checkpoint

    record = args.record
    model, config = load_checkpoint(record / "data/model/release.safetensors")
    tuned = config["operating_point"]
    val = [r for r in read_manifest(record / "data/splits/manifest.csv") if r["split"] == "val"]
    folder = record / "data/preprocessed" / val[0]["dataset"]
    ids = [r["image_id"] for r in val]
    ids = ids[:3] if args.quick else ids

    def items(maps, image_ids=None):
        for image_id in image_ids or ids:
            yield (image_id, maps(image_id), read_png(folder / f"{image_id}_MA.png") > 0,
                   read_png(folder / f"{image_id}_fov.png") > 0)

    stored = lambda image_id: read_png(record / "data/predictions" / args.domain / f"{image_id}_MA.png")  # noqa: E731
    points = {"paper point (0.5, no area filter)": (0.5, 0),
              f"tune threshold ({tuned['threshold']}), no area filter": (tuned["threshold"], 0),
              f"tune point ({tuned['threshold']}, {tuned['min_area']} px): the record": (tuned["threshold"],
                                                                                        tuned["min_area"])}
    rows = {}
    for name, (threshold, min_area) in points.items():
        summary, _ = score_images(items(stored), threshold, min_area, bootstrap_draws=100)
        rows[name] = {k: summary[k] for k in KEYS}
    if args.tta:
        subset = ids[:args.tta_images] if args.tta_images else ids
        if len(subset) < len(ids):  # the same images without TTA: the stored maps, for a like-for-like row
            summary, _ = score_images(items(stored, subset), tuned["threshold"], tuned["min_area"], bootstrap_draws=100)
            rows[f"the record on the {len(subset)} TTA images"] = {k: summary[k] for k in KEYS}
        settings = resolve(config, "inference", load_params("infer", record / "params.yaml") | {"tta": "flips"},
                           DEFAULTS)
        started = time.perf_counter()

        def flipped(image_id):
            print(f"tta {image_id}", file=sys.stderr, flush=True)
            return to_uint8(predict_probability(model, read_png(folder / f"{image_id}.png"),
                                                read_png(folder / f"{image_id}_fov.png") > 0, settings)[0])

        summary, _ = score_images(items(flipped, subset), tuned["threshold"], tuned["min_area"], bootstrap_draws=100)
        rows[f"the record + flip TTA (4x the inference), {len(subset)} images"] = {k: summary[k] for k in KEYS} | {
            "seconds": time.perf_counter() - started}
    for name, row in rows.items():
        print(f"{name}: " + ", ".join(f"{k} {row[k]:.4f}" for k in KEYS))
    print(json.dumps({"record": record.resolve().name, "images": len(ids), "rows": rows}))


if __name__ == "__main__":
    main()
