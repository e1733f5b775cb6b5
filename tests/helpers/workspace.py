"""Shared by the tests: the repository root, the real IDRiD copy (required in CI), commands that fail the test
with their output, and a throwaway git + DVC workspace holding this checkout's code."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"


def idrid_root() -> Path | None:
    """The real IDRiD copy named by $MICROPATCH_IDRID (`make test` sets it when ../shared/datasets/IDRiD exists)."""
    root = os.environ.get("MICROPATCH_IDRID")
    return Path(root) if root and (Path(root) / "A. Segmentation").is_dir() else None


def require_idrid() -> Path:
    """The real IDRiD copy; without it a test skips, or fails where $MICROPATCH_REQUIRE_IDRID is set (CI: .ci/run),
    so that a missing copy can never turn the real-data checks green."""
    root = idrid_root()
    if root is None:
        reason = ("the real IDRiD copy is missing: set MICROPATCH_IDRID to the folder holding 'A. Segmentation' "
                  f"(now {os.environ.get('MICROPATCH_IDRID')!r})")
        if os.environ.get("MICROPATCH_REQUIRE_IDRID"):
            pytest.fail(f"MICROPATCH_REQUIRE_IDRID is set and {reason}")
        pytest.skip(reason)
    return root


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    """Run a command; fail the test with its output tails when it fails; return stdout + stderr."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def dvc_workspace(work: Path, edit_params) -> dict:
    """A git + DVC repo at work holding stages/, src/, params.yaml edited by edit_params(params) and the dvc.yaml
    `micropatch pipeline` writes for them; returns the environment to run dvc in."""
    from micropatch.project.pipeline import render

    for name in ("stages", "src"):
        shutil.copytree(REPO / name, work / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    edit_params(params)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (work / "dvc.yaml").write_text(render(work, code=work))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    run(["git", "init", "-q"], work, env)
    run(["dvc", "init", "-q"], work, env)
    return env
