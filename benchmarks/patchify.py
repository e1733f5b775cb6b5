"""Patchify speed and patch-set size: every train/val image of the real IDRiD split (54 images), as the stage does.

Reads the preprocessed images of a pipeline (default: results/idrid-ma-best, the real-IDRiD record), builds both patch
sets with the stage's code and writes them to a temp folder. Prints a line per split and, last, one JSON object.
--quick: the first 6 images.
"""
import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from micropatch.core.fileio import load_params
from micropatch.data.manifest import read_manifest
from micropatch.data.patches import build_patch_set, write_patch_set

RECORD = Path(__file__).resolve().parents[1] / "results" / "idrid-ma-best"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pipeline", type=Path, default=RECORD, help="a pipeline folder (params.yaml, data/)")
    args = parser.parse_args()
    params = load_params("patchify", args.pipeline / "params.yaml")
    lesions = load_params("lesions", args.pipeline / "params.yaml")
    manifest = read_manifest(args.pipeline / "data/splits/manifest.csv")
    rows = [r for r in manifest if r["split"] in ("train", "val")][:6 if args.quick else None]
    results = {"images": len(rows), "splits": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for split in ("train", "val"):
            split_started = time.perf_counter()
            images, masks, index, _ = build_patch_set([r for r in rows if r["split"] == split],
                                                      args.pipeline / "data/preprocessed", lesions, params["size"],
                                                      params["stride"], params["background_keep"], params["seed"])
            write_patch_set(Path(tmp) / split, images, masks, index, {"split": split})
            files = sorted(p.name for p in (Path(tmp) / split).iterdir())
            size_mb = sum(p.stat().st_size for p in (Path(tmp) / split).iterdir()) / 2**20
            results["splits"][split] = {"patches": len(index), "files": len(files), "megabytes": round(size_mb, 1),
                                        "seconds": round(time.perf_counter() - split_started, 1)}
            print(f"{split}: {len(index)} patches in {len(files)} files ({', '.join(files)}), {size_mb:.0f} MB, "
                  f"{results['splits'][split]['seconds']} s", flush=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
