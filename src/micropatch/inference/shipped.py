"""Which model file `micropatch predict` runs: the one shipped in the repository (models/), a local file, or a copy
hosted elsewhere, fetched once over https and pinned by its sha256 (nothing unverified is ever loaded)."""
from __future__ import annotations

import os
from pathlib import Path

from micropatch.core.fileio import InputError
from micropatch.data.sources import download, is_url

MODELS = Path(__file__).resolve().parents[3] / "models"
# The model `micropatch predict` uses without --model: the released file of results/idrid-ma-best (its card
# beside it); tests/test_shipped_model.py checks that it is the file whose metrics that record reports.
SHIPPED_MODEL = MODELS / "idrid-ma" / "model.safetensors"


def model_cache() -> Path:
    """Where fetched models are kept: $MICROPATCH_CACHE/models, else ~/.cache/micropatch/models."""
    root = os.environ.get("MICROPATCH_CACHE") or Path.home() / ".cache" / "micropatch"
    return Path(root) / "models"


def resolve_model(model: str | None, sha256: str | None = None) -> Path:
    """The local path of the model to run: the shipped one (model None), a fetched and verified URL, or a file."""
    if model is None:
        if not SHIPPED_MODEL.is_file():
            raise InputError(f"{SHIPPED_MODEL}: the shipped model is missing from this checkout; restore it with "
                             "`git checkout -- models/`, or give --model")
        return SHIPPED_MODEL
    if is_url(model):
        if not sha256 or len(sha256) != 64:
            raise InputError(f"{model}: a model URL needs --model-sha256 (its 64-hex-digit sha256), so that nothing "
                             "but the published file is ever loaded")
        return download(model, sha256.lower(), model_cache() / sha256.lower()[:16],
                        again="run micropatch predict again", pinned_in="your command")
    return Path(model)
