import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_IDRID = REPO.parent / "shared" / "datasets" / "IDRiD"


def idrid_root() -> Path | None:
    """The real IDRiD copy: $MICROPATCH_IDRID, else ../shared/datasets/IDRiD beside the checkout."""
    root = Path(os.environ.get("MICROPATCH_IDRID", SHARED_IDRID))
    return root if (root / "A. Segmentation").is_dir() else None


@pytest.fixture(scope="session")
def synthetic_idrid(tmp_path_factory) -> Path:
    """Four small synthetic images in the official IDRiD layout."""
    from micropatch.synthetic import SyntheticSpec, write_idrid_layout

    root = tmp_path_factory.mktemp("idrid")
    write_idrid_layout(root, 4, seed=7, spec=SyntheticSpec(width=320, height=224, ma_diameter_px=(3, 8)))
    return root


@pytest.fixture
def disc_image() -> np.ndarray:
    """uint8 RGB (200, 300, 3): an orange disc on black, like a tiny fundus."""
    yy, xx = np.mgrid[:200, :300]
    inside = (yy - 100) ** 2 + (xx - 150) ** 2 <= 90**2
    rgb = np.zeros((200, 300, 3), np.uint8)
    rgb[inside] = (190, 90, 40)
    return rgb
