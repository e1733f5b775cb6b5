"""Fixtures shared by every test (the helpers shared by imports live in tests/helpers/workspace.py), and the
`integration` mark on everything under tests/integration/; with $MICROPATCH_TEST_TIMELINE set, one line per test
(worker, start, end, node id) appended to that file: where a run's wall time went, worker by worker."""
import os
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.workspace import require_idrid


@pytest.fixture(scope="session")
def idrid() -> Path:
    """require_idrid() as a fixture."""
    return require_idrid()


@pytest.fixture(scope="session")
def synthetic_idrid(tmp_path_factory) -> Path:
    """Four small synthetic images in the official IDRiD layout."""
    from micropatch.data.synthetic import SyntheticSpec, write_idrid_layout

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


# The files that take longest, longest first (seconds on 2 cores with three workers, from a clean clone's
# $MICROPATCH_TEST_TIMELINE). `make test` hands whole files to its workers in collection order (--dist loadfile,
# --no-loadscope-reorder): a long file handed out last would run alone while the other workers sit idle.
LONGEST_FIRST = ("integration/test_study.py", "integration/test_benchmarks.py", "integration/test_pipeline_e2e.py",
                 "integration/test_real_idrid_smoke.py", "integration/test_interruption.py",
                 "integration/test_tune.py", "integration/test_study_baseline.py", "unit/core/test_compute.py",
                 "integration/test_runtimes.py", "integration/test_study_retry.py")


def collection_rank(item) -> int:
    """An item's place in LONGEST_FIRST (every other file after them, in collection order)."""
    path = Path(item.fspath).as_posix()
    return next((rank for rank, name in enumerate(LONGEST_FIRST) if path.endswith(f"tests/{name}")),
                len(LONGEST_FIRST))


def pytest_collection_modifyitems(items):
    """Every test under tests/integration/ is marked `integration` (`-m "not integration"`: the unit tests alone);
    the longest files first (LONGEST_FIRST; the sort is stable, so each file's tests keep their order)."""
    for item in items:
        if "integration" in Path(item.fspath).parts:
            item.add_marker(pytest.mark.integration)
    items.sort(key=collection_rank)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Each test's worker and wall-clock span (setup, call and teardown) into $MICROPATCH_TEST_TIMELINE."""
    started = time.time()
    yield
    timeline = os.environ.get("MICROPATCH_TEST_TIMELINE")
    if timeline:
        with open(timeline, "a") as file:  # one short append per test: the workers' lines do not interleave
            file.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}\t{started:.1f}\t{time.time():.1f}\t"
                       f"{item.nodeid}\n")
