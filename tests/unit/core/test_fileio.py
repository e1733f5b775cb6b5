import numpy as np
import pytest
from PIL import Image

from micropatch.core.fileio import InputError, atomic_path, read_fundus, read_mask


def save(path, array, **kw):
    Image.fromarray(array).save(path, **kw)
    return path


def test_truncated_jpeg_is_named(tmp_path, disc_image):
    path = save(tmp_path / "eye.jpg", disc_image)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(InputError, match="eye.jpg.*truncated"):
        read_fundus(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match="nothere.jpg.*missing"):
        read_fundus(tmp_path / "nothere.jpg")


def test_grayscale_and_16bit_fundus_are_refused(tmp_path, disc_image):
    with pytest.raises(InputError, match="grayscale"):
        read_fundus(save(tmp_path / "g.png", disc_image[..., 1]))
    with pytest.raises(InputError, match="16-bit"):
        read_fundus(save(tmp_path / "h.png", disc_image[..., 1].astype(np.uint16) * 256))


def test_exif_rotation_is_refused_not_applied(tmp_path, disc_image):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    Image.fromarray(disc_image).save(path, exif=exif)
    with pytest.raises(InputError, match="EXIF orientation 6"):
        read_fundus(path)


def test_mask_labels_accepted_and_noise_refused(tmp_path):
    labels = np.zeros((20, 20), np.uint8)
    labels[5:8, 5:8], labels[10:12, 10:12] = 200, 255
    assert read_mask(save(tmp_path / "ok.png", labels)).sum() == 13
    noise = np.random.default_rng(0).integers(0, 256, (20, 20), dtype=np.uint8)
    with pytest.raises(InputError, match="noise.png.*not a label map"):
        read_mask(save(tmp_path / "noise.png", noise))


def test_rgba_mask_uses_the_red_channel(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[2:4, 2:4, 0] = 255
    assert read_mask(save(tmp_path / "m.tif", rgba)).sum() == 4


def test_mask_of_the_wrong_size_is_named(tmp_path):
    with pytest.raises(InputError, match="m.png: mask is 10x10 but its image is 12x10"):
        read_mask(save(tmp_path / "m.png", np.zeros((10, 10), np.uint8)), (10, 12))


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]
