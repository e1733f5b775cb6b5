"""File I/O: validated image and mask readers, atomic writers, params loading."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

Image.MAX_IMAGE_PIXELS = 200_000_000  # native fundus frames reach 24 MP; refuse only absurd sizes

# EXIF orientation tag; values other than 1 mean "display rotated", which the masks never are.
EXIF_ORIENTATION = 0x0112
UMASK = os.umask(0o022)
os.umask(UMASK)  # read once: temp files are created 0600 and get the user's usual mode before the rename
MAX_MASK_LABELS = 3  # {0,1}, {0,255}, {0,200}, {0,200,255}: the label levels of the released masks
# A mask may hold other values on at most this share of its lesion pixels and still be a label map. Measured
# (benchmarks/mask_rule.py, docs/explanation/masks.md): the one stray e-ophtha file has 0.75 %; over all 187 real IDRiD
# masks, a JPEG round trip gives at least 3.7 % (quality 95) and a bilinear resampling at least 2.2 %.
MAX_STRAY_FRACTION = 0.01


class InputError(ValueError):
    """A dataset file that cannot be used; the message names the file and the fix."""


def load_params(section: str | None = None, path: str | Path = "params.yaml") -> dict:
    """Read params.yaml (safe_load) and return one top-level section, or all of it."""
    with open(path) as f:
        params = yaml.safe_load(f) or {}
    if section is None:
        return params
    if section not in params:
        raise KeyError(f"{path} has no '{section}' section")
    return params[section]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_folder(dest: str | Path) -> Iterator[Path]:
    """Yield an empty folder beside `dest` to fill; it replaces `dest` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        (tmp / "root").mkdir()
        yield tmp / "root"
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp / "root", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until it ends, then raise it: a few renames that
    belong together are not cut in half."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


@contextlib.contextmanager
def staged_files(dest: str | Path) -> Iterator[Path]:
    """Yield an empty hidden folder inside `dest` to write a set of files into; when the block succeeds they are
    moved into `dest` together (a Ctrl-C waits for the moves), else removed: the set lands whole or not at all,
    and the files of `dest` it would replace stay as they were until then."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    # named before it exists and made inside the try: a Ctrl-C at any point leaves no staging folder behind
    # (with mkdtemp, one landing between the folder's creation and the try kept it)
    tmp = dest / f".staged.{uuid.uuid4().hex}"
    try:
        tmp.mkdir(mode=0o700)
        yield tmp
        with deferred_interrupt():
            for path in sorted(tmp.iterdir()):
                os.replace(path, dest / path.name)
    finally:
        with deferred_interrupt():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically with sorted keys, so equal content gives equal bytes."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_png(path: str | Path, array: np.ndarray, compression: int = 1) -> None:
    """Write a uint8 (H, W) or (H, W, 3 RGB) array as a lossless PNG, atomically."""
    if array.dtype != np.uint8:
        raise TypeError(f"write_png expects uint8, got {array.dtype} for {path}")
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, compression])
        if not ok:
            raise OSError(f"could not encode {path} as PNG")
        tmp.write_bytes(buf.tobytes())


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """np.save atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def read_png(path: str | Path) -> np.ndarray:
    """Read a PNG written by write_png: uint8 (H, W) or (H, W, 3) RGB."""
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise InputError(f"{path}: unreadable PNG; rerun the stage that writes it")
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB) if array.ndim == 3 else array


def file_digest(path: str | Path, algorithm: str, chunk: int = 1 << 20) -> str:
    """Hex digest of a file's bytes with a hashlib algorithm ("sha256"; "md5" is only DVC's content address)."""
    digest = hashlib.new(algorithm, usedforsecurity=algorithm != "md5")
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    return file_digest(path, "sha256", chunk)


def _open_decoded(path: Path, what: str) -> Image.Image:
    """Open and fully decode an image, turning every decoder failure into an InputError."""
    if not path.is_file():
        raise InputError(f"{path}: {what} file is missing; restore it from the dataset download")
    try:
        image = Image.open(path)
        image.load()  # decodes now, so truncation is caught here and not in a later stage
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(
            f"{path}: unreadable or truncated {what} ({err}); re-download or re-extract this file"
        ) from err
    return image


def exif_orientation(image: Image.Image) -> int:
    """EXIF orientation of a decoded image; 1 (upright) when absent."""
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # broken EXIF blocks are common in camera exports; pixels are still usable
        return 1


def read_fundus(path: str | Path) -> np.ndarray:
    """Read a fundus photograph as uint8 RGB (H, W, 3) in stored pixel order (EXIF rotation refused)."""
    path = Path(path)
    image = _open_decoded(path, "fundus image")
    orientation = exif_orientation(image)
    if orientation != 1:
        raise InputError(
            f"{path}: EXIF orientation {orientation} asks viewers to rotate this image, but its masks are "
            "stored unrotated; re-save the image with the rotation applied to its pixels (and its masks), "
            "or strip the EXIF orientation tag if the pixels are already upright"
        )
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise InputError(f"{path}: {image.mode} (16-bit or float) image; convert it to 8-bit RGB first")
    if image.mode in ("L", "1", "LA"):
        raise InputError(f"{path}: grayscale fundus image ({image.mode}); micropatch needs the RGB photograph")
    if image.mode == "RGBA":
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() < 255:
            raise InputError(f"{path}: RGBA image with transparent pixels; flatten it to RGB first")
        image = image.convert("RGB")
    elif image.mode == "P":
        image = image.convert("RGB")
    elif image.mode != "RGB":
        raise InputError(f"{path}: unsupported image mode {image.mode}; save it as 8-bit RGB JPEG/PNG/TIFF")
    return np.asarray(image)


def label_map_stray(values: np.ndarray) -> tuple[list[int], float]:
    """(label levels, stray share) of an integer mask: its MAX_MASK_LABELS most frequent values, and the share of
    its non-zero pixels that hold any other value (0.0 for an empty mask)."""
    if values.dtype == np.uint8:  # OpenCV's histogram: np.unique sorts the 12 MP of a mask (0.2 s), this 5 ms
        counts = cv2.calcHist([np.ascontiguousarray(values)], [0], None, [256], [0, 256]).ravel().astype(np.int64)
        levels = np.flatnonzero(counts)
        counts = counts[levels]
    else:
        levels, counts = np.unique(values, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    labels = sorted(int(v) for v in levels[order[:MAX_MASK_LABELS]])
    nonzero = int(counts[levels != 0].sum())
    return labels, (int(counts[order[MAX_MASK_LABELS:]].sum()) / nonzero if nonzero else 0.0)


def read_mask(path: str | Path, shape: tuple[int, int] | None = None, notes: list[str] | None = None,
              level: int = 1, antialiased: bool = False) -> np.ndarray:
    """Read a lesion mask as bool (H, W): value >= level (red channel for RGB/RGBA) is lesion; level 1: non-zero.

    A label map holds a few levels ({0,255}, {0,200,255}, ...). Stray values on at most MAX_STRAY_FRACTION of
    the lesion pixels are accepted and described in `notes`; more than that means a JPEG-saved, resampled or
    grayscale image, which is refused, unless the dataset documents anti-aliased edges (antialiased: FGADR), where
    the edge values are expected and `level` decides.
    """
    path = Path(path)
    image = _open_decoded(path, "mask")
    if image.mode == "1":
        mask = np.asarray(image, dtype=bool)
        values = None
    elif image.mode in ("RGB", "RGBA"):
        values = np.asarray(image.getchannel("R"))
    elif image.mode == "P":
        values = np.asarray(image.convert("RGB")).max(axis=2)
    elif image.mode in ("L", "I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image)
    else:
        raise InputError(f"{path}: unsupported mask mode {image.mode}; save masks as 1-bit, 8-bit or RGB")
    if values is not None:
        labels, stray = label_map_stray(values)
        if stray > MAX_STRAY_FRACTION and not antialiased:
            raise InputError(
                f"{path}: not a label map: {stray:.1%} of its lesion pixels hold values other than its main levels "
                f"{labels} ({np.unique(values).size} distinct values; a label map has at most "
                f"{MAX_STRAY_FRACTION:.0%} stray pixels). A JPEG-saved or resampled mask is the usual cause: use "
                "the original lossless file")
        if stray and notes is not None and not antialiased:
            odd, counts = np.unique(values[~np.isin(values, labels)], return_counts=True)
            notes.append(f"{path}: label map {labels} with {int(counts.sum())} stray pixels "
                         f"({', '.join(f'{int(c)} of {int(v)}' for v, c in zip(odd, counts))}); lesion where "
                         f"{'non-zero' if level <= 1 else f'>= {level}'}")
        mask = values > 0 if level <= 1 else values >= level  # 1: any non-zero value, float masks included
    if shape is not None and mask.shape != tuple(shape):
        raise InputError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}; "
            "masks must have the image's exact size (was one of them resized?)"
        )
    return mask
