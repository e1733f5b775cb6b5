"""Stage operating-point: the released model, i.e. the trained weights with everything prediction needs in its
metadata: the operating point (threshold and minimum component area, chosen by pooled Dice on the tune split's
full images, never on val or a test domain; the paper's 0.5 and none without a tune split; a multi-lesion model
gets one per lesion, and a model-wide one from the lesions' mean Dice) and the training images' median FOV
diameter (for infer.rescale_fov). Infer, score and `micropatch predict` use this file."""
import argparse
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from micropatch import compute, logs
from micropatch.fileio import load_params, read_png, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("model", "manifest", "preprocessed", "out", "report"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    args = parser.parse_args()
    logs.setup()
    params = load_params()
    compute.configure(**params["compute"])  # before torch is imported: it pins what decides the bits
    import torch

    from micropatch.inference import DEFAULTS, manifest_probability, to_uint8
    from micropatch.model import load_checkpoint, round_to_half_storage, save_checkpoint
    from micropatch.postprocess import OPERATING_DEFAULTS, choose_operating_point, operating_counts
    from micropatch.preprocessing import fov_diameter
    from micropatch.recipe import resolve
    from micropatch.split import read_manifest

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, config = load_checkpoint(args.model, device)
    round_to_half_storage(model)  # the released file stores half kernels: choose the point on what it predicts
    manifest = read_manifest(args.manifest)
    fov_of = lambda row: read_png(args.preprocessed / row["dataset"] / f"{row['image_id']}_fov.png") > 0  # noqa: E731
    diameters = [fov_diameter(fov_of(r)) for r in tqdm(manifest, desc="FOV diameters", unit="img", leave=False)
                 if r["split"] == "train"]
    settings = resolve(config, "inference", params["infer"] | {"rescale_fov": False}, DEFAULTS)
    tune = [r for r in manifest if r["split"] == "tune"]
    report = {"chosen_on": f"{len(tune)} tune images" if tune else "none: no tune split, the paper's point",
              "tune_images": [r["image_id"] for r in tune], "inference": settings}
    point = dict(OPERATING_DEFAULTS)
    if tune:
        pooled = {lesion: 0 for lesion in config["lesions"]}
        for row in tqdm(tune, desc="operating point", unit="img"):  # each image predicted once, for every lesion
            folder, fov = args.preprocessed / row["dataset"], fov_of(row)
            probability = manifest_probability(model, config, row, args.preprocessed, settings, device)
            for lesion, channel in zip(config["lesions"], probability):
                truth = read_png(folder / f"{row['image_id']}_{lesion}.png") > 0
                pooled[lesion] = pooled[lesion] + operating_counts(to_uint8(channel), truth, fov)
        per_lesion = {lesion: choose_operating_point(counts) for lesion, counts in pooled.items()}
        if len(per_lesion) == 1:
            chosen = next(iter(per_lesion.values()))
            point = {"threshold": chosen["threshold"], "min_area": chosen["min_area"]}
        else:  # each lesion its own point; the lesions' mean Dice grid gives the model-wide one beside them
            grid = np.mean([np.array(c["dice_grid"]["dice"]) for c in per_lesion.values()], axis=0)
            first = next(iter(per_lesion.values()))["dice_grid"]
            i, j = np.unravel_index(np.argmax(grid), grid.shape)
            point = {"threshold": first["thresholds"][i], "min_area": first["min_areas"][j],
                     "per_lesion": {lesion: {"threshold": c["threshold"], "min_area": c["min_area"]}
                                    for lesion, c in per_lesion.items()}}
        report["per_lesion"] = per_lesion
    config = config | {"operating_point": point,
                       "inference": config.get("inference", {}) | {"fov_diameter": int(np.median(diameters))}}
    save_checkpoint(args.out, model, config, half_weights=True)
    write_json(args.report, report | {"operating_point": point, "train_fov_diameter_median": int(np.median(diameters)),
                                      "train_fov_diameter_range": [min(diameters), max(diameters)]})
    logging.info("operating-point: threshold %.2f, min_area %d (%s); training FOV diameter %d px",
                 point["threshold"], point["min_area"], report["chosen_on"], int(np.median(diameters)))


if __name__ == "__main__":
    main()
