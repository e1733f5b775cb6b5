"""Stage patchify: 128x128 windows every 64 px of each train/tune/val image; all lesion windows, 10 % of background
(the paper's sampling), plus hard negatives and lesion-centred windows for the train split when params ask."""
import argparse
import logging
from pathlib import Path

from micropatch import logs
from micropatch.fileio import load_params
from micropatch.patches import build_patch_set, write_patch_set
from micropatch.split import read_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--preprocessed", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logs.setup()
    params = load_params("patchify")
    lesions = load_params("lesions")
    manifest = read_manifest(args.manifest)
    splits = ["train", "val"] + (["tune"] if any(r["split"] == "tune" for r in manifest) else [])
    for split in splits:
        rows = [r for r in manifest if r["split"] == split]
        # the extras only where weights are fitted: selection splits keep the plain sampling, whose background
        # windows then stand for the whole image at weight 1 / background_keep (training.weighted_histograms)
        extras = (params["hard_negative_keep"], params["lesion_jitter"]) if split == "train" else (0.0, 0)
        images, masks, index, per_image = build_patch_set(rows, args.preprocessed, lesions, params["size"],
                                                          params["stride"], params["background_keep"], params["seed"],
                                                          *extras)
        meta = {"split": split, "lesions": lesions, "size": params["size"], "stride": params["stride"],
                "background_keep": params["background_keep"], "seed": params["seed"],
                "hard_negative_keep": extras[0], "lesion_jitter": extras[1], "patches": len(index),
                "lesion_patches": sum(1 for r in index if r["lesion_pixels"] > 0), "per_image": per_image}
        write_patch_set(args.out / split, images, masks, index, meta)
        logging.info("patchify %s: %d patches (%d with lesion) from %d images", split, meta["patches"],
                     meta["lesion_patches"], len(per_image))


if __name__ == "__main__":
    main()
