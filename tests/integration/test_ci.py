"""CI's preflight (.ci/preflight, which .ci/run calls first): a missing IDRiD copy or PostgreSQL server ends CI with
one line naming it, instead of letting the tests that need them skip."""
import os
import subprocess

import pytest
from helpers.workspace import REPO


def preflight(**env) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / ".ci" / "preflight")], cwd=REPO, capture_output=True, text=True,
                          env=os.environ | {"MICROPATCH_CI_NO_INSTALL": "1"} | env, timeout=60)


def test_ci_stops_when_the_idrid_copy_is_missing(tmp_path):
    done = preflight(MICROPATCH_IDRID=str(tmp_path / "nowhere"))
    assert done.returncode == 1 and "CI needs the real IDRiD copy" in done.stderr


def test_ci_stops_when_postgresql_is_missing():
    done = preflight(MICROPATCH_PG_GLOB="/nonexistent/pg_ctl", PATH="/bin")
    assert done.returncode == 1 and done.stderr.strip() == ("CI needs PostgreSQL's server binaries (Debian: apt-get "
                                                            "install postgresql)")


def test_ci_runs_the_preflight_and_requires_what_it_checked():
    run = (REPO / ".ci" / "run").read_text()
    assert run.index("\n.ci/preflight") < run.index("\nmake run\n") < run.index("\nmake test")
    for name in ("MICROPATCH_REQUIRE_POSTGRES=1", "MICROPATCH_REQUIRE_IDRID=1", "MICROPATCH_REQUIRE_CHROMIUM=1"):
        assert f"export {name}" in run


def test_make_test_lints_and_audits_every_committed_manifest():
    makefile = (REPO / "Makefile").read_text()
    assert "$(BIN)/ruff check" in makefile and "results/*/data/splits/manifest.csv" in makefile
    tracked = subprocess.run(["git", "ls-files", "*manifest.csv"], cwd=REPO, capture_output=True, text=True).stdout
    dry = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True).stdout
    if "manifest" not in dry:
        pytest.fail(f"make -n test printed no audit: {dry[:500]}")
    for manifest in tracked.split():
        assert manifest in dry, f"{manifest} is committed but make test does not audit it"
