import imagehash
import numpy as np

from micropatch.data.duplicates import PHASH_THRESHOLD
from micropatch.data.preprocessing import fov_mask, fov_phash, green_clahe
from micropatch.data.synthetic import SyntheticSpec, synth_fundus


def test_clahe_keeps_size_dtype_and_full_range(disc_image):
    rng = np.random.default_rng(0)
    rgb = disc_image.copy()
    rgb[..., 1] = np.clip(rgb[..., 1] + rng.normal(0, 5, rgb.shape[:2]), 0, 255).astype(np.uint8)
    out = green_clahe(rgb)
    assert out.shape == rgb.shape[:2] and out.dtype == np.uint8
    inside = fov_mask(rgb)
    # CLAHE stretches the narrow green range inside the disc
    assert np.ptp(out[inside]) > np.ptp(rgb[..., 1][inside])


def test_clahe_reads_the_green_channel_only(disc_image):
    rgb = disc_image.copy()
    other = rgb.copy()
    other[..., 0] = 0
    other[..., 2] = 255
    assert np.array_equal(green_clahe(rgb), green_clahe(other))


def test_fov_mask_is_the_disc_with_dark_lesions_filled(disc_image):
    rgb = disc_image.copy()
    rgb[95:105, 145:155] = 0  # a black "lesion" inside must stay field of view
    fov = fov_mask(rgb)
    yy, xx = np.mgrid[:200, :300]
    truth = (yy - 100) ** 2 + (xx - 150) ** 2 <= 90**2
    assert fov[100, 150]
    assert (fov != truth).mean() < 0.01


def test_phash_ignores_the_black_border():
    rgb, _ = synth_fundus(1, SyntheticSpec(width=512, height=340))
    padded = np.zeros((420, 640, 3), np.uint8)
    padded[40:380, 64:576] = rgb

    def phash(image):
        return imagehash.hex_to_hash(fov_phash(green_clahe(image), fov_mask(image)))

    assert phash(rgb) - phash(padded) <= PHASH_THRESHOLD // 2
