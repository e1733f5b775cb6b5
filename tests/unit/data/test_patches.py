import numpy as np

from micropatch.data.patches import select_windows, window_starts, window_sums


def test_window_starts_cover_the_image_and_end_flush():
    assert window_starts(320, 128, 64).tolist() == [0, 64, 128, 192]
    assert window_starts(300, 128, 64).tolist() == [0, 64, 128, 172]
    assert window_starts(100, 128, 64).tolist() == [0]


def test_window_sums_match_direct_counts():
    rng = np.random.default_rng(1)
    mask = rng.random((300, 350)) < 0.01
    ys, xs, counts = window_sums(mask, 128, 64)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            assert counts[i, j] == mask[y:y + 128, x:x + 128].sum()


def test_keeps_every_lesion_window_and_about_ten_percent_of_background():
    lesion = np.zeros((2048, 2048), bool)
    lesion[1000, 1000] = True  # inside the 4 windows starting at 896 and 960 on each axis
    fov = np.ones_like(lesion)
    kept = select_windows(lesion, fov, 128, 64, 0.1, np.random.default_rng(0))
    with_lesion = [(y, x) for y, x, n in kept if n > 0]
    assert sorted(with_lesion) == [(896, 896), (896, 960), (960, 896), (960, 960)]
    background = len(kept) - 4
    total_background = 31 * 31 - 4
    assert abs(background / total_background - 0.1) < 0.03


def test_never_keeps_windows_fully_outside_the_fov():
    lesion = np.zeros((512, 512), bool)
    fov = np.zeros_like(lesion)
    fov[:128, :128] = True
    kept = select_windows(lesion, fov, 128, 64, 1.0, np.random.default_rng(0))
    assert {(y, x) for y, x, _ in kept} == {(0, 0), (0, 64), (64, 0), (64, 64)}


def test_selection_is_seeded():
    lesion = np.zeros((1024, 1024), bool)
    fov = np.ones_like(lesion)
    a = select_windows(lesion, fov, 128, 64, 0.1, np.random.default_rng(5))
    b = select_windows(lesion, fov, 128, 64, 0.1, np.random.default_rng(5))
    c = select_windows(lesion, fov, 128, 64, 0.1, np.random.default_rng(6))
    assert a == b and a != c
