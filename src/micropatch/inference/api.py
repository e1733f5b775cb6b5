"""The library's way to predict, as `micropatch predict` does for one photograph (micropatch.load_model and
micropatch.predict_image): the model's recipe and operating point, predict's defaults, files written the same way.

    import micropatch
    model = micropatch.load_model()                     # the shipped model; or a file, or an https URL + sha256
    summary = micropatch.predict_image(model, "photo.jpg", "out/")   # counts, FOV, scale; files under out/
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from micropatch.core import compute
from micropatch.core.fileio import InputError
from micropatch.core.recipe import predict_setting
from micropatch.inference.predict import header_refusal, model_config, resolve_settings
from micropatch.inference.shipped import resolve_model

NO_POINT = {"threshold": None, "min_area": None}


@dataclass
class LoadedModel:
    """A model ready for predict_image: the network (or its export), its recipe and the settings it runs with."""

    network: object
    config: dict
    point: dict
    inference: dict
    preprocess: dict
    path: Path


def load_model(model: str | Path | None = None, sha256: str | None = None, runtime: str | None = None,
               precision: str | None = None, **inference) -> LoadedModel:
    """The shipped model (None), a model file, or an https URL (with its sha256), loaded once for many photographs;
    runtime / precision as `micropatch predict` takes them (default: its own), inference: its settings by name
    (mode, rescale_fov: True / False / "auto", tta, ...). The compute mode is torch's fast one unless the caller
    pinned another before importing torch."""
    path = resolve_model(None if model is None else str(model), sha256)
    model_config(path)  # refuses what is not a micropatch model before anything is loaded
    runtime, precision = predict_setting(path, runtime, precision, None)
    if "torch" not in sys.modules:
        compute.configure("fast")
    from micropatch.inference.runtimes import load_model as load_runtime

    network, config = load_runtime(path, runtime, precision)
    point, settings, preprocess = resolve_settings(config, NO_POINT, inference, {}, runtime,
                                                   getattr(network, "precision", precision))
    return LoadedModel(network, config, point, settings, preprocess, path)


def predict_image(model: LoadedModel, photo: str | Path, out: str | Path, overlay: str = "jpeg") -> dict:
    """Predict one photograph with a loaded model, writing its maps, masks, overlay and lesion list under out (as
    `micropatch predict` names them); returns the summary (lesion counts, FOV diameter, scale)."""
    from micropatch.inference.predict import predict_image as predict_files

    reason = header_refusal(Path(photo), model.inference["window"])
    if reason:
        raise InputError(f"{photo}: {reason}")
    Path(out).mkdir(parents=True, exist_ok=True)
    return predict_files(model.network, model.config, Path(photo), Path(out), model.inference, model.preprocess,
                         model.point, overlay=overlay)
