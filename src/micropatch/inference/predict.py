"""`micropatch predict`: native-resolution lesion maps, masks, overlays and lesion lists for any fundus photograph.

One call: the arguments and every input are checked first (nothing is loaded or written for a call that cannot
run), the model is loaded once, each photograph is predicted and its files written, and at the end the call is
appended to the folder's run record (`predict_runs.json`) and the folder's `report.html` is rewritten.
"""
from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from micropatch.core.fileio import InputError, read_fundus, staged_files, write_json, write_png, write_text
from micropatch.evaluation.postprocess import OPERATING_DEFAULTS, lesion_point, operating_mask, scaled_min_area
from micropatch.inference.report import LESION_COLOURS, OTHER_COLOUR, write_report

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
RUN_RECORD = "predict_runs.json"
LESION_COLUMNS = ("lesion", "centroid_x", "centroid_y", "area_px", "peak_probability")
OVERLAY_FORMATS = {"jpeg": ".jpg", "png": ".png"}
JPEG_QUALITY = 95
PNG_WRITERS = min(4, os.cpu_count() or 1)
# A photograph whose FOV is this many times smaller than the training images' would be upsampled so far that an
# MA (IDRiD's median is about 9 px across at 3,414 px FOV) falls under 2 px in the photograph: refused.
MAX_UPSCALE = 4.5


@dataclass
class Photo:
    """One input photograph and where its outputs go: <out>/<subfolder>/<stem>_* (subfolder: its place under a
    folder given as input, mirrored)."""

    path: Path
    out: Path
    subfolder: Path = Path()

    @property
    def out_dir(self) -> Path:
        return self.out / self.subfolder

    @property
    def key(self) -> str:
        """Its files' prefix relative to --out: subfolder/stem."""
        return (self.subfolder / self.path.stem).as_posix()


@dataclass
class Call:
    """What one predict call did, for the run record: photographs done and refused (with reasons)."""

    settings: dict
    done: list[dict] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def refuse(self, path: Path, reason: str) -> None:
        self.refused.append({"image": str(path), "reason": reason})


# ---------------------------------------------------------------------------------------------- checks, no model


def threshold_arg(text: str) -> float:
    """argparse type of --threshold: a probability in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability in [0, 1]")
    return value


def min_area_arg(text: str) -> int:
    """argparse type of --min-area: a whole number of pixels >= 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a pixel count >= 0 (0 keeps every component)")
    return int(text)


def collect_photos(inputs: list[Path], out: Path, recursive: bool = False) -> list[Photo]:
    """The photographs named by files, folders (every JPEG, PNG and TIFF inside; --recursive: in subfolders too,
    their layout mirrored under out) and quoted glob patterns; InputError for a missing input, an empty folder, or
    two photographs whose outputs would land on the same names."""
    photos: list[Photo] = []
    for given in inputs:
        if not given.exists() and glob.has_magic(str(given)):
            matches = sorted(Path(p) for p in glob.glob(str(given), recursive=recursive))
            if not matches:
                raise InputError(f"{given}: no file matches this pattern; check it, or quote it less")
            photos += [Photo(p, out) for p in matches if p.is_file()]
        elif given.is_dir():
            found = [p for p in sorted(given.rglob("*") if recursive else given.iterdir())
                     if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not is_inside(p, out)]
            if not found:
                raise InputError(f"{given}: a folder with no JPEG, PNG or TIFF photograph in it"
                                 f"{'' if recursive else ' (add --recursive for its subfolders)'}")
            photos += [Photo(p, out, p.parent.relative_to(given)) for p in found]
        elif given.is_file():
            photos.append(Photo(given, out))
        else:
            raise InputError(f"{given}: does not exist; check the path")
    seen: dict[str, Path] = {}
    for photo in photos:
        if photo.key in seen:
            raise InputError(f"{seen[photo.key]} and {photo.path} share the name '{photo.path.stem}', so their "
                             "outputs would overwrite each other in one --out folder: rename one, or predict them "
                             "in two calls")
        seen[photo.key] = photo.path
    return photos


def is_inside(path: Path, folder: Path) -> bool:
    """True when path lies in folder (the --out folder's own files are never inputs)."""
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_out(out: Path) -> None:
    """InputError unless --out is (or can be made) a writable folder; nothing is created."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: an existing file, not a folder; give a folder (it is created if missing)")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"--out {out}: {existing} is a file, so no folder can be made under it; give another path")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise InputError(f"--out {out}: {existing} is not writable ({err.strerror}); give a folder you can write "
                         "to") from None
    record = out / RUN_RECORD
    if record.exists():
        read_run_record(record)


def read_run_record(path: Path) -> list[dict]:
    """The calls of an existing run record; InputError when the file is not one (it is never overwritten)."""
    try:
        runs = json.loads(path.read_text())["runs"]
        if not isinstance(runs, list):
            raise TypeError
        return runs
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{path}: not a micropatch run record; move it away, or give another --out") from None


def header_refusal(path: Path, window: int) -> str | None:
    """Why a photograph cannot be predicted, from its header alone (not decoded), or None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"unreadable as JPEG, PNG or TIFF ({err.__class__.__name__}); re-export or re-download it"
    if min(width, height) < window:
        return (f"{width}x{height} px is smaller than one {window} px window of the model; micropatch predicts "
                "fundus photographs at their native resolution (typically 1,400 px wide or more)")
    return None


def fov_refusal(diameter: int, train_diameter: int | None) -> str | None:
    """Why a photograph's field of view is too small for the model, or None."""
    if train_diameter and diameter * MAX_UPSCALE < train_diameter:
        return (f"its field of view is {diameter} px across, under 1/{MAX_UPSCALE:g} of the model's training "
                f"images' ({train_diameter} px), so microaneurysms would be under 2 px: use the camera's "
                "full-resolution file")
    return None


# ------------------------------------------------------------------------------------------- one photograph


def lesion_list(probability: np.ndarray, mask: np.ndarray, lesion: str) -> list[dict]:
    """One row per 8-connected component of a bool (H, W) mask: centroid (px), area (px), peak probability."""
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    peaks = np.zeros(count, np.float32)
    np.maximum.at(peaks, labels[mask], probability[mask])
    return [{"lesion": lesion, "centroid_x": round(float(centroids[i][0]), 1),
             "centroid_y": round(float(centroids[i][1]), 1), "area_px": int(stats[i, cv2.CC_STAT_AREA]),
             "peak_probability": round(float(peaks[i]), 4)} for i in range(1, count)]


def outline_width(shape: tuple[int, ...]) -> int:
    """Outline thickness in px: about 1/1400 of the longer side, at least 2, so it shows at any zoom."""
    return max(2, round(max(shape[:2]) / 1400))


def overlay_outlines(rgb: np.ndarray, masks: dict[str, np.ndarray]) -> np.ndarray:
    """uint8 RGB with each lesion class's predicted components outlined in its colour over a dark rim (visible on
    bright exudates and on the dark background alike), the line width scaled with the photograph."""
    out = np.ascontiguousarray(rgb.copy())
    width = outline_width(rgb.shape)
    grow = np.ones((2 * width + 1, 2 * width + 1), np.uint8)  # the outline sits around the lesion, not on it
    for lesion, mask in masks.items():
        contours, _ = cv2.findContours(cv2.dilate(mask.astype(np.uint8), grow), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (0, 0, 0), width + 2, lineType=cv2.LINE_AA)
        cv2.drawContours(out, contours, -1, LESION_COLOURS.get(lesion, OTHER_COLOUR), width, lineType=cv2.LINE_AA)
    return out


def write_jpeg(path: Path, rgb: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """An RGB uint8 array as JPEG, atomically."""
    from micropatch.core.fileio import atomic_path

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"could not encode {path} as JPEG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def write_overlay(path: Path, rgb: np.ndarray) -> None:
    (write_jpeg if path.suffix == ".jpg" else write_png)(path, rgb)


def lesions_csv(lesions: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LESION_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(lesions)
    return buf.getvalue()


def predict_image(model, config: dict, image_path: Path, out_dir: Path, infer_params: dict, preprocess: dict,
                  point: dict = OPERATING_DEFAULTS, device: str = "cpu", overlay: str = "jpeg",
                  progress=None) -> dict:
    """Write <stem>_<lesion>_probability.png (p = v/255), _mask.png, <stem>_overlay.jpg (or .png) and
    <stem>_lesions.{json,csv}; return a summary (lesion counts, FOV diameter, scale, files).

    preprocess: {clahe_clip_limit, clahe_grid, fov_threshold}, the model's recipe unless the user overrode it;
    point: the operating point {threshold, min_area} that makes the masks (the model's unless overridden), its
    min_area counted in the training images' frame: scaled by the area ratio where the photograph is rescaled.
    InputError (nothing written) for a photograph that cannot be used.
    """
    from micropatch.core.recipe import model_recipe
    from micropatch.data.preprocessing import checked_fov, green_clahe
    from micropatch.evaluation.metrics import to_uint8
    from micropatch.inference.modes import fov_scale, predict_probability, square_probability

    rgb = read_fundus(image_path)  # InputError for unreadable, truncated, grayscale, 16-bit, rotated input
    fov = checked_fov(rgb, preprocess["fov_threshold"], image_path)
    diameter, scale = fov_scale(fov, infer_params)
    refusal = fov_refusal(diameter, infer_params.get("fov_diameter"))
    if refusal:
        raise InputError(f"{image_path}: {refusal}")
    if scale != 1.0:
        log.info("%s: FOV %d px, the model's %d px: resampled x%.2f, maps back to %dx%d", Path(image_path).name,
                 diameter, infer_params["fov_diameter"], scale, rgb.shape[1], rgb.shape[0])
    if model_recipe(config) == "study_baseline":  # the RGB photograph in the model's square frame
        probability = square_probability(model, rgb, fov, config, infer_params, device)
    else:
        enhanced = green_clahe(rgb, preprocess["clahe_clip_limit"], preprocess["clahe_grid"])
        probability = predict_probability(model, enhanced, fov, infer_params, device, progress)
    stem, masks, lesions, pngs, applied = Path(image_path).stem, {}, [], {}, {}
    for lesion, channel in zip(config["lesions"], probability):
        quantised = to_uint8(channel)
        own = lesion_point(point, lesion)
        applied[lesion] = {"threshold": own["threshold"], "min_area": scaled_min_area(own["min_area"], scale)}
        # the map as written decides, so files and lists agree
        masks[lesion] = operating_mask(quantised, applied[lesion]["threshold"], applied[lesion]["min_area"])
        pngs[out_dir / f"{stem}_{lesion}_probability.png"] = quantised
        pngs[out_dir / f"{stem}_{lesion}_mask.png"] = masks[lesion].astype(np.uint8) * 255
        lesions += lesion_list(quantised / 255.0, masks[lesion], lesion)
    overlay_path = out_dir / f"{stem}_overlay{OVERLAY_FORMATS[overlay]}"
    # PNG encoding releases the GIL: the files are written side by side (a 4288x2848 overlay alone takes 0.7 s)
    with ThreadPoolExecutor(PNG_WRITERS) as pool:
        jobs = [pool.submit(write_png, path, array) for path, array in pngs.items()]
        jobs.append(pool.submit(write_overlay, overlay_path, overlay_outlines(rgb, masks)))
        for job in jobs:
            job.result()
    counts = {lesion: sum(row["lesion"] == lesion for row in lesions) for lesion in config["lesions"]}
    geometry = {"fov_diameter_px": diameter, "model_fov_diameter_px": infer_params.get("fov_diameter"),
                "scale": round(scale, 4)}
    write_json(out_dir / f"{stem}_lesions.json", {"image": str(image_path), "height": rgb.shape[0],
                                                  "width": rgb.shape[1], "operating_point": point,
                                                  "applied_point": applied, "counts": counts, "lesions": lesions}
               | geometry)
    write_text(out_dir / f"{stem}_lesions.csv", lesions_csv(lesions))
    return {"image": str(image_path), "lesions": len(lesions), "counts": counts, "width": rgb.shape[1],
            "height": rgb.shape[0], "overlay": overlay_path.name} | geometry


# ------------------------------------------------------------------------------------------- the run record


def write_run_record(out: Path, call: Call, interrupted: bool = False) -> None:
    """Append this call to <out>/predict_runs.json (rewritten atomically, the earlier calls kept)."""
    path = out / RUN_RECORD
    runs = read_run_record(path) if path.exists() else []
    runs.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(call.started)),
                 "seconds": round(time.time() - call.started, 1), "interrupted": interrupted,
                 "settings": call.settings, "done": call.done, "refused": call.refused})
    write_json(path, {"runs": runs})


def latest_results(out: Path) -> list[dict]:
    """Every photograph done in the folder's recorded calls, the latest result of each output prefix, in order."""
    path = out / RUN_RECORD
    latest: dict[str, dict] = {}
    for run in read_run_record(path) if path.exists() else []:
        for done in run["done"]:
            latest.pop(done["files"], None)
            latest[done["files"]] = done | {"settings": run["settings"]}
    return list(latest.values())


# ------------------------------------------------------------------------------------------- the command


def model_config(model_path: Path) -> dict:
    """The recipe of a model file, read without torch: a safetensors checkpoint's header or an ONNX export's
    metadata; InputError naming the file for anything else."""
    from micropatch.core.recipe import checkpoint_config

    if not model_path.exists():
        raise InputError(f"{model_path}: model file does not exist; check --model (default: the shipped model)")
    if model_path.suffix.lower() == ".onnx":
        from micropatch.core.recipe import read_recipe

        return read_recipe(model_path)
    return checkpoint_config(model_path)


def explicit_settings(args) -> tuple[dict, dict, dict]:
    """(operating point, inference, preprocess) settings the user gave on the command line (None: not given)."""
    point = {"threshold": args.threshold, "min_area": args.min_area}
    infer = {"mode": args.mode, "first_pass_tilings": args.first_pass_tilings,
             "shifted_evidence": args.shifted_evidence, "tta": args.tta,
             "rescale_fov": {"auto": "auto", "on": True, "off": False, None: None}[args.rescale_fov]}
    preprocess = {"clahe_clip_limit": args.clahe_clip_limit, "clahe_grid": args.clahe_grid,
                  "fov_threshold": args.fov_threshold}
    return point, infer, preprocess


def resolve_settings(config: dict, given_point: dict, given_infer: dict, given_preprocess: dict, runtime: str,
                     precision: str) -> tuple[dict, dict, dict]:
    """(operating point, inference, preprocess) of a predict call: the model's recipe, what the user gave on top
    (each difference logged), and predict's own defaults (PREDICT_DEFAULTS) for the rest, silently."""
    from micropatch.core.recipe import PREDICT_DEFAULTS, resolve
    from micropatch.data.preprocessing import DEFAULTS as PREPROCESS_DEFAULTS
    from micropatch.inference.modes import DEFAULTS

    point = resolve(config, "operating_point", given_point, OPERATING_DEFAULTS)
    infer = resolve(config, "inference", given_infer, DEFAULTS)
    infer |= {key: PREDICT_DEFAULTS[key] for key in ("mode", "first_pass_tilings", "shifted_evidence", "rescale_fov")
              if given_infer.get(key) is None}
    infer |= {"runtime": runtime, "precision": precision}
    if given_point.get("threshold") is not None or given_point.get("min_area") is not None:
        point.pop("per_lesion", None)  # a point given on the command line holds for every lesion
    # fast mode is paper's map at every pixel >= refine_threshold: at or below the operating threshold, the masks
    # are paper's masks
    infer["refine_threshold"] = min(infer["refine_threshold"], point["threshold"],
                                    *(p.get("threshold", 1.0) for p in point.get("per_lesion", {}).values()))
    return point, infer, resolve(config, "preprocess", given_preprocess, PREPROCESS_DEFAULTS)


def run(args) -> int:
    """The `micropatch predict` command (cli.py parses its arguments): 0 when every photograph was predicted, 2
    when any was refused (each refusal one line on stderr, the others still predicted)."""
    import sys

    from micropatch.core import compute
    from micropatch.core.recipe import predict_setting
    from micropatch.inference.shipped import resolve_model

    check_out(args.out)
    photos = collect_photos(args.images, args.out, args.recursive)
    model_path = resolve_model(args.model, args.model_sha256)
    config = model_config(model_path)
    window = config.get("inference", {}).get("window", 128)
    accepted, refused = [], []
    for photo in photos:
        reason = header_refusal(photo.path, window)
        if reason:
            print(f"micropatch predict: error: {photo.path}: {reason}", file=sys.stderr)
            refused.append({"image": str(photo.path), "reason": reason})
        else:
            accepted.append(photo)
    if not accepted:
        return 2  # nothing loaded, nothing written
    runtime, precision = predict_setting(model_path, args.runtime, args.precision, args.compute)
    # the reproducible compute mode pins torch's kernels; the other runtimes pick their own, so it is not theirs
    mode = args.compute or ("reproducible" if runtime == "torch" else "fast")
    compute_settings = compute.configure(mode, args.threads)  # before torch is imported (None: the mode's default)
    import torch

    from micropatch.core.fileio import sha256_file
    from micropatch.inference.runtimes import load_model

    device = "cuda" if torch.cuda.is_available() and runtime == "torch" else "cpu"
    started = time.perf_counter()
    model, config = load_model(model_path, runtime, precision, args.threads, device)  # compiled once per call
    loaded_s = time.perf_counter() - started
    point, infer, preprocess = resolve_settings(config, *explicit_settings(args), runtime,
                                                getattr(model, "precision", precision))
    call = Call({"model": str(args.model or model_path), "model_file": str(model_path),
                 "model_sha256": sha256_file(model_path), "operating_point": point, "inference": infer,
                 "preprocess": preprocess, "compute": compute_settings, "device": device, "overlay": args.overlay})
    call.refused += refused
    created = not args.out.exists()
    try:
        predict_all(accepted, model, config, infer, preprocess, point, device, args.overlay, call)
    except KeyboardInterrupt:
        finish(args.out, call, created, interrupted=True)
        raise KeyboardInterrupt(f"{len(call.done)} of {len(accepted)} photograph(s) done, each with all its files "
                                f"(listed in {args.out / RUN_RECORD}); rerun to predict the rest") from None
    finish(args.out, call, created)
    log.info("predict: %d photograph(s) with %s %s, %s mode; model ready in %.1f s, %.1f s in all; report: %s",
             len(call.done), runtime, infer["precision"], infer["mode"], loaded_s, time.perf_counter() - started,
             args.out / "report.html")
    return 2 if call.refused else 0


def predict_all(photos: list[Photo], model, config: dict, infer: dict, preprocess: dict, point: dict, device: str,
                overlay: str, call: Call) -> None:
    """Predict each photograph into its folder; a photograph that cannot be used is refused (one line on stderr)
    and the others go on. Progress: windows within the photograph, and photographs in the call."""
    import sys

    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    several = len(photos) > 1
    with logging_redirect_tqdm(), tqdm(total=len(photos), desc="predict", unit="img", disable=not several,
                                       position=0) as images:
        for photo in photos:
            began = time.perf_counter()
            with tqdm(total=0, desc=photo.path.name, unit="win", leave=False, position=int(several)) as windows:
                try:
                    with staged_files(photo.out_dir) as staging:
                        summary = predict_image(model, config, photo.path, staging, infer, preprocess, point,
                                                device, overlay, windows)
                except InputError as err:  # one bad photograph does not stop the others
                    call.refuse(photo.path, str(err).removeprefix(f"{photo.path}: "))
                    tqdm.write(f"micropatch predict: error: {err}", file=sys.stderr)
                    images.update()
                    continue
            seconds = round(time.perf_counter() - began, 2)
            call.done.append(summary | {"files": photo.key, "seconds": seconds})
            print(json.dumps(summary | {"seconds": seconds}), flush=True)
            images.update()


def finish(out: Path, call: Call, created: bool, interrupted: bool = False) -> None:
    """Record the call and rewrite the folder's report; a call that predicted nothing writes nothing, and removes
    the folders it made."""
    if call.done:
        write_run_record(out, call, interrupted)
        write_report(out, latest_results(out))
    elif created:
        for folder in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [out]:
            if not any(folder.iterdir()):
                folder.rmdir()
