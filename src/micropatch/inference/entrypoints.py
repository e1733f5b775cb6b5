"""The inference phase's pipeline stages (operating-point, infer), given the stage scripts' parsed arguments. Each
pins the compute mode before torch is imported, so the torch-land modules are imported inside the functions."""
from __future__ import annotations

import argparse
import logging

import numpy as np
from tqdm import tqdm

from micropatch.core import compute, logs
from micropatch.core.fileio import load_params, read_png, write_json
from micropatch.data.manifest import domain_rows, read_manifest


def operating_point(args: argparse.Namespace) -> None:
    """stages/operating_point.py: the released model, i.e. the trained weights with everything prediction needs in its
    metadata: the operating point (threshold and minimum component area, chosen by pooled Dice on the tune split's
    full images, never on val or a test domain; the paper's 0.5 and none without a tune split; a multi-lesion model
    gets one per lesion, and a model-wide one from the lesions' mean Dice) and the training images' median FOV
    diameter (for infer.rescale_fov). Infer, score and `micropatch predict` use this file.

    args: the stage script's parsed arguments (the paths dvc.yaml names).
    """
    logs.setup()
    params = load_params()
    compute.configure(**params["compute"])  # before torch is imported: it pins what decides the bits
    import torch

    from micropatch.core.recipe import resolve
    from micropatch.data.manifest import read_manifest
    from micropatch.data.preprocessing import fov_diameter
    from micropatch.evaluation.metrics import to_uint8
    from micropatch.evaluation.postprocess import OPERATING_DEFAULTS, choose_operating_point, operating_counts
    from micropatch.inference.maps import manifest_probability
    from micropatch.inference.modes import DEFAULTS
    from micropatch.training.network import load_checkpoint, round_to_half_storage, save_checkpoint

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
                       "inference": released_inference(config.get("inference", {}), settings, diameters)}
    save_checkpoint(args.out, model, config, half_weights=True)
    write_json(args.report, report | {"operating_point": point, "train_fov_diameter_median": int(np.median(diameters)),
                                      "train_fov_diameter_range": [min(diameters), max(diameters)]})
    logging.info("operating-point: threshold %.2f, min_area %d (%s); training FOV diameter %d px",
                 point["threshold"], point["min_area"], report["chosen_on"], int(np.median(diameters)))


# The inference settings that change the maps themselves, so that the point chosen on them holds only with them:
# they travel in the released file, and `micropatch predict` runs them unless told otherwise (the mode, runtime and
# precision only change how fast the same maps come; predict picks its own).
MAP_SETTINGS = ("tta",)


def released_inference(recipe: dict, settings: dict, diameters: list[int]) -> dict:
    """The release's inference recipe: the training recipe's, the map-changing settings the operating point was
    chosen with (infer.tta), and the training images' median FOV diameter (for rescale_fov)."""
    return recipe | {key: settings[key] for key in MAP_SETTINGS} | {"fov_diameter": int(np.median(diameters))}


def infer(args: argparse.Namespace) -> None:
    """stages/infer.py: probability maps (uint8 PNG, p = v/255) for every image of one test domain.

    infer.mode `paper` slides the model's windows (128/64) with mean blending (the method); `fast` runs the same
    windows, the overlapping ones only near candidates and none outside the field of view; infer.precision int8 runs
    either through a quantized copy of the model on the CPU (benchmarks/infer.py measures all of them). infer.runtime
    torch (the default) gives the same bytes on every x86-64 CPU in the reproducible compute mode; onnxruntime and
    openvino run the model's ONNX export faster, with bits that depend on the CPU (benchmarks/runtimes.py). Window and
    stride come from the model's recipe unless params.yaml `infer` sets them. A model of recipe study_baseline predicts
    the RGB photograph in its square frame, mapped back to the native frame (micropatch.square).

    args: the stage script's parsed arguments (the paths dvc.yaml names).
    """
    logs.setup()
    params = load_params()
    compute.configure(**params["compute"])  # before torch is imported: it pins what decides the bits
    import torch

    from micropatch.core.recipe import resolve
    from micropatch.inference.maps import write_domain_maps
    from micropatch.inference.modes import DEFAULTS
    from micropatch.inference.runtimes import load_model

    spec = params["roles"]["test_on"][args.domain]
    runtime, precision = params["infer"]["runtime"], params["infer"]["precision"]
    device = "cuda" if torch.cuda.is_available() and runtime == "torch" else "cpu"
    if runtime != "torch":
        logging.warning("infer.runtime %s: these maps' bits depend on this CPU; torch in the reproducible compute "
                        "mode gives the same bytes on every x86-64 CPU", runtime)
    model, config = load_model(args.model, runtime, precision, device=device)
    settings = resolve(config, "inference", params["infer"], DEFAULTS)
    rows = domain_rows(read_manifest(args.manifest), args.domain, spec)
    write_domain_maps(model, config, args.domain, spec, rows, args.preprocessed, settings, args.out, device)
    logging.info("infer %s: %d images (%s mode, %s %s)", args.domain, len(rows), settings["mode"], runtime,
                 settings["precision"])
