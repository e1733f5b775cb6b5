"""Stage patchify: 128x128 windows every 64 px of each train/tune/val image; all lesion windows, 10 % of background
(the paper's sampling), plus hard negatives and lesion-centred windows for the train split when params ask. Under
`recipe: study_baseline`, one square per image instead (micropatch.square), which train crops at random."""
import argparse
import logging
from pathlib import Path

from micropatch import logs
from micropatch.fileio import load_params
from micropatch.patches import build_patch_set, write_patch_set
from micropatch.recipe import model_recipe
from micropatch.square import SQUARE_KIND, build_square_set
from micropatch.split import read_manifest


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--preprocessed", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
