"""How long `micropatch datasets inspect idrid` takes on the official segmentation layout: the 54 training images
as shipped, and 81 images (the size of the whole official set, training and test halves).

Only the 54 training images are here, so the 81-image layout holds them and, as its test half ('b. Testing Set',
IDRiD_55 to IDRiD_81, as the release names them), copies of 27 of them with their masks: the same camera, size
and JPEG and TIFF encodings as the real test half. Each run is the command itself in a fresh process, the whole
wall time, the median of --repeats runs. Prints one line per layout and, last, one JSON object.
--quick: 6 small synthetic images in the official layout, 9 in the larger one.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEGMENTATION, IMAGES, TRUTHS = "A. Segmentation", "1. Original Images", "2. All Segmentation Groundtruths"
TRAIN, TEST = "a. Training Set", "b. Testing Set"


def with_test_half(source: Path, out: Path, count: int) -> Path:
    """A copy of source's training half, plus a test half of `count` copies of its first training images renamed
    after the release's test ids (IDRiD_55, ...), each with every mask the original has."""
    seg, new = source / SEGMENTATION, out / SEGMENTATION
    shutil.copytree(seg / IMAGES / TRAIN, new / IMAGES / TRAIN)
    shutil.copytree(seg / TRUTHS / TRAIN, new / TRUTHS / TRAIN)
    originals = sorted((seg / IMAGES / TRAIN).glob("IDRiD_*.jpg"))[:count]
    for n, image in enumerate(originals):
        stem, test_id = image.stem, f"IDRiD_{55 + n:02d}"
        (new / IMAGES / TEST).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, new / IMAGES / TEST / f"{test_id}.jpg")
        for folder in (seg / TRUTHS / TRAIN).iterdir():
            for mask in folder.glob(f"{stem}_*.tif"):
                target = new / TRUTHS / TEST / folder.name / mask.name.replace(stem, test_id)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(mask, target)
    return out


def timed_inspect(root: Path) -> tuple[float, dict]:
    """(wall seconds, the printed JSON) of `micropatch datasets inspect idrid root` in a fresh process."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "micropatch.cli", "datasets", "inspect", "idrid", str(root)],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"inspect of {root} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idrid", type=Path, default=os.environ.get("MICROPATCH_IDRID") or "../shared/datasets/IDRiD")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.quick:
            from micropatch.data.synthetic import SyntheticSpec, write_idrid_layout

            source = work / "synthetic"
            write_idrid_layout(source, 6, seed=7, spec=SyntheticSpec(width=320, height=224))
            args.repeats, extra = 1, 3
        else:
            source, extra = args.idrid, 27
            if not (source / SEGMENTATION / IMAGES / TRAIN).is_dir():
                raise SystemExit(f"{source}: no IDRiD copy there; set MICROPATCH_IDRID or pass --idrid")
        layouts = {"as shipped": source, "with a test half": with_test_half(source, work / "larger", extra)}
        results = {"cpu_count": os.cpu_count(), "repeats": args.repeats, "layouts": {}}
        for name, root in layouts.items():
            runs, report = [], {}
            for _ in range(args.repeats):
                seconds, report = timed_inspect(root)
                runs.append(round(seconds, 2))
            results["layouts"][name] = {"images": report["images"], "problems": len(report["problems"]),
                                        "runs_s": runs, "median_s": statistics.median(runs),
                                        "per_image_s": round(statistics.median(runs) / report["images"], 3)}
            print(f"{name}: {report['images']} images, median {statistics.median(runs):.1f} s of {runs}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
