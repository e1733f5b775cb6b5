"""DVC's own views of this repository, run on the repository itself (not a copy): no warning, a table that fits a
terminal, and every declared metrics file committed."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.workspace import REPO

from micropatch.evaluation.score import HEADLINE_KEYS, headline
from micropatch.project.pipeline import projects

WIDTH = 200


def dvc(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["dvc", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=600)


def previous_commit() -> str:
    shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=REPO, capture_output=True,
                             text=True).stdout.strip()
    found = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD~1"], cwd=REPO, capture_output=True, text=True)
    if found.returncode and shallow == "true":
        pytest.skip("a shallow clone holds no HEAD~1 (git fetch --unshallow)")
    assert found.returncode == 0, "this repository has no HEAD~1"
    return "HEAD~1"


def test_dvc_metrics_show_prints_no_warning_and_fits_in_200_columns():
    result = dvc("metrics", "show")
    assert result.returncode == 0, result.stderr
    assert "failed to load" not in result.stdout + result.stderr and "WARNING" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) > 3 and max(map(len, lines)) <= WIDTH, max(map(len, lines))
    assert lines[0].split()[0] == "Path" and set(lines[0].split()[1:]) == set(HEADLINE_KEYS)


@pytest.mark.parametrize("command", ["metrics", "params"])
def test_dvc_diff_against_the_previous_commit_prints_no_warning(command):
    result = dvc(command, "diff", previous_commit(), "HEAD")
    assert result.returncode == 0, result.stderr
    assert "failed to load" not in result.stdout + result.stderr and "WARNING" not in result.stderr, result.stderr


def declared_metrics(project: Path) -> list[Path]:
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    found = []
    for stage in stages.values():
        for entry in stage.get("do", stage).get("metrics", []):
            found += [project / name for name in (entry if isinstance(entry, dict) else {entry: {}})]
    return found


def test_every_declared_metrics_path_is_committed_and_is_a_headline():
    tracked = set(subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split())
    for project in projects():
        for path in declared_metrics(project):
            files = [f for f in tracked if f.startswith(path.relative_to(REPO).as_posix() + "/")]
            assert files, f"{path} is declared as metrics in {project / 'dvc.yaml'} but nothing of it is committed"
            assert path.name == "headline"


def test_each_headline_file_is_its_domain_scores_headline():
    import json

    for project in projects():
        for path in sorted((project / "metrics" / "headline").glob("*.json")):
            domain, lesion = path.stem.rsplit("_", 1)
            scored = json.loads((project / "metrics" / "domains" / f"{domain}.json").read_text())
            assert json.loads(path.read_text()) == headline(scored["lesions"][lesion]), path
