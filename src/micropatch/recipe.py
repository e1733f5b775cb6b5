"""The recipe a model carries in its file (like nnU-Net's plans): how to preprocess, window and normalise an image
for it, written by the train stage and read by the infer stage and `micropatch predict`, so prediction cannot
drift from training. A setting the user gives explicitly wins over the recipe, and is logged."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# Inference settings that are not the model's to decide (the method's defaults; params.yaml `infer` sets them for
# the pipeline). window and stride come from the recipe: the patch size the model was trained on.
# tta: none, or flips (the mean probability over the 4 flips of each window, 4x the compute); rescale_fov: resample
# each image so that its FOV diameter is the training images' (the recipe's fov_diameter), predict, and resample
# the maps back to the native frame, where they are scored.
INFER_DEFAULTS = {"mode": "paper", "precision": "fp32", "batch_size": 32, "refine_threshold": 0.15,
                  "calibration_windows": 32, "tta": "none", "rescale_fov": False}
PREPROCESS_KEYS = ("clahe_clip_limit", "clahe_grid", "fov_threshold")


def training_recipe(preprocess: dict, patchify: dict, normalisation: dict, compute: dict,
                    manifest_sha256: str) -> dict:
    """What train writes into the checkpoint's metadata besides the architecture."""
    return {"preprocess": {k: preprocess[k] for k in PREPROCESS_KEYS},
            "inference": INFER_DEFAULTS | {"window": patchify["size"], "stride": patchify["stride"]},
            "normalisation": normalisation, "compute": compute, "train_manifest_sha256": manifest_sha256}


def resolve(config: dict, section: str, explicit: dict, defaults: dict) -> dict:
    """A recipe section (`preprocess` or `inference`) with the explicitly given keys on top, each override logged.

    defaults fill keys that a model written before recipes existed does not carry.
    """
    settings = defaults | config.get(section, {})
    for key, value in explicit.items():
        if value is not None and key in settings and settings[key] != value:
            log.info("%s.%s: using %r as given, not the model's %r", section, key, value, settings[key])
    return settings | {k: v for k, v in explicit.items() if v is not None}
