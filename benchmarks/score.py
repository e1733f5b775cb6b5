"""Score-stage memory vs number of images: peak RSS must stay flat (streaming), not grow with the dataset.

Each image count runs in a fresh process (peak RSS only grows within a process). Images are 4288x2848 random
probability maps with ~200 MA-sized lesions, written to a temp folder and scored by `micropatch evaluate`'s code.
Prints a line per count and, last, one JSON object.  --quick: 1024x680 images, counts 1, 2, 4.
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(folder: Path, n: int, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    (folder / "pred").mkdir(parents=True, exist_ok=True)
    (folder / "truth").mkdir(exist_ok=True)
    for i in range(n):
        truth = np.zeros(shape, np.uint8)
        for y, x in zip(rng.integers(10, shape[0] - 10, 200), rng.integers(10, shape[1] - 10, 200)):
            truth[y - 4:y + 4, x - 4:x + 4] = 255
        prob = np.clip(rng.normal(30, 30, shape) + (truth > 0) * 150, 0, 255).astype(np.uint8)
        Image.fromarray(prob).save(folder / "pred" / f"img{i:03d}.png", compress_level=1)
        Image.fromarray(truth).save(folder / "truth" / f"img{i:03d}.png")


def child(folder: str, n: int) -> None:
    """Score the first n images; print peak RSS (MB) and seconds."""
    from micropatch.core.fileio import read_mask, read_png
    from micropatch.evaluation.score import score_images

    def items():
        for i in range(n):
            prob = read_png(Path(folder) / "pred" / f"img{i:03d}.png")
            yield f"img{i:03d}", prob, read_mask(Path(folder) / "truth" / f"img{i:03d}.png"), None

    started = time.perf_counter()
    score_images(items(), 0.5, bootstrap_draws=100)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "seconds": time.perf_counter() - started}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]))
    shape, counts = ((680, 1024), (1, 2, 4)) if args.quick else ((2848, 4288), (1, 2, 4, 8))
    with tempfile.TemporaryDirectory() as tmp:
        make_images(Path(tmp), max(counts), shape)
        results = {}
        for n in counts:
            out = subprocess.run([sys.executable, __file__, "--child", tmp, str(n)], capture_output=True, text=True,
                                 check=True).stdout.strip().splitlines()[-1]
            results[n] = json.loads(out)
            print(f"{n} images of {shape[1]}x{shape[0]}: peak RSS {results[n]['peak_rss_mb']:.0f} MB, "
                  f"{results[n]['seconds']:.1f} s")
    rss = [results[n]["peak_rss_mb"] for n in counts]
    print(json.dumps({"image_shape": list(shape), "images": list(counts), "peak_rss_mb": rss,
                      "rss_growth_ratio": rss[-1] / rss[0],
                      "seconds_per_image": results[counts[-1]]["seconds"] / counts[-1]}))


if __name__ == "__main__":
    main()
