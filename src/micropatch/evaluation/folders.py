"""Scoring any method's maps: probability maps (8-bit PNG, p = v / 255, or .npy in [0, 1]) against truth masks,
paired by file stem, scored as the score stage scores (`micropatch evaluate` and micropatch.evaluate)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from micropatch.core.fileio import InputError, read_mask, read_png
from micropatch.evaluation.metrics import to_uint8
from micropatch.evaluation.postprocess import OPERATING_DEFAULTS
from micropatch.evaluation.score import score_images, write_rows

MAP_SUFFIXES = (".png", ".npy")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".gif", ".bmp")
# The scores `micropatch evaluate` prints: the operating point's, the two ranking scores, the lesion level.
SUMMARY_KEYS = ("precision", "recall", "dice", "iou", "aupr_11", "ap", "degenerate", "lesion_sensitivity",
                "fps_per_image", "froc", "n_images")


def by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """stem -> file of a folder's files with those suffixes; InputError for two files of one stem."""
    if not Path(folder).is_dir():
        raise InputError(f"{folder}: not a folder; give the folder holding the files")
    files = {}
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() in suffixes:
            if path.stem in files:
                raise InputError(f"{folder}: two files share the stem '{path.stem}' ({files[path.stem].name}, "
                                 f"{path.name})")
            files[path.stem] = path
    return files


def read_probability(path: Path) -> np.ndarray:
    """uint8 (H, W) probability map (p = v / 255) from an 8-bit PNG or a float .npy in [0, 1]."""
    if path.suffix.lower() == ".npy":
        values = np.load(path, allow_pickle=False)
        if values.ndim != 2 or not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise InputError(f"{path}: .npy predictions must be finite 2-D probabilities in [0, 1]")
        return to_uint8(values)
    values = read_png(path)
    if values.ndim != 2 or values.dtype != np.uint8:
        raise InputError(f"{path}: PNG predictions must be 8-bit single-channel (p = value / 255)")
    return values


def evaluate(pred: str | Path, truth: str | Path, fov: str | Path | None = None,
             threshold: float = OPERATING_DEFAULTS["threshold"], min_area: int = OPERATING_DEFAULTS["min_area"],
             csv: str | Path | None = None) -> dict:
    """The SUMMARY_KEYS scores of the maps in `pred` against the masks in `truth` (and FOV masks in `fov`: pixels
    outside never count as predictions), paired by stem; csv: also the per-image table there."""
    preds, truths = by_stem(Path(pred), MAP_SUFFIXES), by_stem(Path(truth), MASK_SUFFIXES)
    fovs = by_stem(Path(fov), MASK_SUFFIXES) if fov else {}
    unpaired = sorted(set(preds) ^ set(truths))
    if unpaired or not preds:
        raise InputError(f"--pred {pred} and --truth {truth} must hold the same stems; unpaired: "
                         f"{unpaired[:10] or 'no predictions found'}")

    def items():
        for stem in sorted(preds):
            probability = read_probability(preds[stem])
            mask = read_mask(truths[stem], probability.shape)
            yield stem, probability, mask, read_mask(fovs[stem], probability.shape) if stem in fovs else None

    summary, rows = score_images(items(), threshold, min_area, seed=0)
    if csv:
        write_rows(Path(csv), rows)
    return {k: summary[k] for k in SUMMARY_KEYS}
