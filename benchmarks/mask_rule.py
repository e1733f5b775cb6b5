"""Where the label-map rule of micropatch.core.fileio.read_mask comes from: stray-value figures of real masks.

For every real IDRiD mask (MICROPATCH_IDRID or --idrid), the share of non-zero pixels that are not one of the
mask's 3 most frequent values ("stray"), as shipped, after a JPEG round trip (quality 75 and 95), and after
resampling (bilinear, to e-ophtha's 2544 px width and to 1440 px); plus the four e-ophtha value sets the
synthetic generator copies. Prints one line per case and, last, one JSON object.  --quick: 6 masks.
"""
import argparse
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from micropatch.core.fileio import label_map_stray
from micropatch.data.synthetic import EOPHTHA_MASK_STYLES, _save_mask_png, synth_fundus


def jpeg(values: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf))


def resample(values: np.ndarray, width: int) -> np.ndarray:
    height = round(values.shape[0] * width / values.shape[1])
    return cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idrid", type=Path, default=os.environ.get("MICROPATCH_IDRID") or "../shared/datasets/IDRiD")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    masks = sorted((args.idrid / "A. Segmentation" / "2. All Segmentation Groundtruths").rglob("*.tif"))
    if not masks:  # `make test` exports MICROPATCH_IDRID empty where there is no IDRiD copy
        raise SystemExit(f"{args.idrid}: no IDRiD masks there; set MICROPATCH_IDRID or pass --idrid")
    masks = masks[::max(1, len(masks) // 6)][:6] if args.quick else masks
    cases = {"as shipped": lambda v: v, "jpeg q95": lambda v: jpeg(v, 95), "jpeg q75": lambda v: jpeg(v, 75),
             "bilinear to 2544 px": lambda v: resample(v, 2544), "bilinear to 1440 px": lambda v: resample(v, 1440)}
    results = {}
    for name, transform in cases.items():
        fractions = []
        for path in masks:
            values = (np.asarray(Image.open(path).convert("L")) > 0).astype(np.uint8) * 255
            changed = transform(values)
            if changed.any():
                fractions.append(label_map_stray(changed)[1])
        results[name] = {"masks": len(fractions), "stray_fraction_min": min(fractions),
                         "stray_fraction_median": float(np.median(fractions)), "stray_fraction_max": max(fractions)}
        print(f"IDRiD {name}: {len(fractions)} non-empty masks, stray share of lesion pixels min "
              f"{min(fractions):.4%}, median {np.median(fractions):.4%}, max {max(fractions):.4%}")
    _, lesion = synth_fundus(0)
    for style in EOPHTHA_MASK_STYLES:
        path = Path(f"/tmp/mask_rule_{style}.png")
        _save_mask_png(path, lesion["MA"], style)
        values = np.asarray(Image.open(path))
        levels, stray = label_map_stray(values)
        results[f"e-ophtha {style}"] = {"values": np.unique(values).tolist(), "stray_fraction": stray}
        print(f"e-ophtha-style {style}: values {np.unique(values).tolist()}, stray share {stray:.4%}")
        path.unlink()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
