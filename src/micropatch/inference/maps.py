"""The infer stage's maps: every image of a test domain, by the model's recipe, as uint8
PNGs with the domain.json the score stage reads."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from micropatch.core.fileio import read_png, write_json, write_png
from micropatch.core.recipe import model_recipe
from micropatch.evaluation.metrics import to_uint8
from micropatch.evaluation.postprocess import OPERATING_DEFAULTS
from micropatch.inference.modes import predict_probability, square_probability


def manifest_probability(model: torch.nn.Module, config: dict, row: dict, preprocessed: Path, params: dict,
                         device: str | torch.device = "cpu") -> np.ndarray:
    """(L, H, W) probabilities of one manifest image by the model's recipe: predict_probability on the preprocess
    stage's enhanced green channel (micropatch), or the raw RGB photograph in its square frame (study_baseline)."""
    folder = Path(preprocessed) / row["dataset"]
    if model_recipe(config) == "study_baseline":
        from micropatch.data.square import read_rgb_and_fov

        rgb, fov = read_rgb_and_fov(row, preprocessed)
        return square_probability(model, rgb, fov, config, params, device)
    image = read_png(folder / f"{row['image_id']}.png")
    return predict_probability(model, image, read_png(folder / f"{row['image_id']}_fov.png") > 0, params, device)


def write_domain_maps(model: torch.nn.Module, config: dict, domain: str, spec: dict, rows: list[dict],
                      preprocessed: Path, settings: dict, out: Path, device: str | torch.device = "cpu") -> None:
    """A test domain's maps (uint8 PNG per image and lesion, p = v / 255) and its domain.json, which the score
    stage reads: the infer stage's output, for any model (the study's averaged ones too)."""

    for row in tqdm(rows, desc=f"infer {domain}", unit="img"):
        probability = manifest_probability(model, config, row, preprocessed, settings, device)
        for lesion, channel in zip(config["lesions"], probability):
            write_png(Path(out) / f"{row['image_id']}_{lesion}.png", to_uint8(channel))
    write_json(Path(out) / "domain.json", {"domain": domain, **spec, "lesions": config["lesions"],
                                           "image_ids": [r["image_id"] for r in rows],
                                           "operating_point": OPERATING_DEFAULTS | config.get("operating_point", {}),
                                           "inference": settings})
