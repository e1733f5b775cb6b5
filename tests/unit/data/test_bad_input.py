"""A generated corpus of bad inputs: each yields one clear error naming the file, and leaves no output behind."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from micropatch.core.fileio import InputError
from micropatch.data.datasets import LESIONS, Record, load_records
from micropatch.data.preprocessing import preprocess_record

TRAIN_IMAGES = Path("A. Segmentation/1. Original Images/a. Training Set")
TRAIN_MASKS = Path("A. Segmentation/2. All Segmentation Groundtruths/a. Training Set")


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def ma_mask(root: Path) -> Path:
    return root / TRAIN_MASKS / "1. Microaneurysms" / "IDRiD_02_MA.tif"


def image_of(root: Path) -> Path:
    return root / TRAIN_IMAGES / "IDRiD_02.jpg"


def exif_rotated(root):
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.open(image_of(root)).save(image_of(root), exif=exif)


def noisy_mask(root):
    noise = np.random.default_rng(0).integers(0, 256, (224, 320), dtype=np.uint8)
    Image.fromarray(noise).save(ma_mask(root))


CASES = {  # name: (how to break the layout, what the error must say)
    "truncated JPEG": (lambda r: truncate(image_of(r)), "IDRiD_02.jpg: unreadable or truncated fundus image"),
    "truncated TIFF mask": (lambda r: truncate(ma_mask(r)), "IDRiD_02_MA.tif: unreadable or truncated mask"),
    "mask of another size": (lambda r: Image.new("1", (100, 80)).save(ma_mask(r)),
                             "mask is 100x80 but its image is 320x224"),
    "grayscale-noise mask": (noisy_mask, "not a label map"),
    "EXIF rotation": (exif_rotated, "EXIF orientation 8"),
    "missing required mask": (lambda r: ma_mask(r).unlink(), "IDRiD_02_MA.tif: missing MA mask"),
    "duplicate image id": (lambda r: shutil.copy(image_of(r), image_of(r).with_suffix(".JPG")),
                           "duplicate image id 'IDRiD_02'"),
    "empty dataset root": (lambda r: [p.unlink() for p in (r / TRAIN_IMAGES).iterdir()], "no images found"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_dataset_file_gives_one_clear_error_and_no_output(case, synthetic_idrid, tmp_path):
    root = tmp_path / "idrid"
    shutil.copytree(synthetic_idrid, root)
    breaks, message = CASES[case]
    breaks(root)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=message) as error:
        for record in load_records("idrid", root, "idrid"):
            preprocess_record(record, out, list(LESIONS), 2.0, 8, 15)
    print(f"{case}: {error.value}")
    assert not list(out.glob("IDRiD_02*")), "a failing image must leave no output behind"


@pytest.mark.parametrize("case, array, message", [
    ("16-bit image", np.full((224, 320), 40000, np.uint16), "16-bit"),
    ("grayscale fundus", np.full((224, 320), 90, np.uint8), "grayscale fundus image"),
    ("RGBA with transparency", np.zeros((224, 320, 4), np.uint8), "transparent pixels"),
    ("black frame, no fundus", np.zeros((224, 320, 3), np.uint8), "does not look like a fundus photograph"),
])
def test_unusable_image_formats_are_refused(case, array, message, tmp_path):
    path = tmp_path / "eye.png"
    Image.fromarray(array).save(path)
    record = Record("x", "eye", "eye", "train", path, {"MA": None})
    with pytest.raises(InputError, match=message) as error:
        preprocess_record(record, tmp_path / "out", ["MA"], 2.0, 8, 15)
    print(f"{case}: {error.value}")
    assert not (tmp_path / "out").exists()
