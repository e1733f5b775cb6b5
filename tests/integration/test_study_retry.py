"""A study run that DVC's queue fails is queued once more (treeverse/dvc#10673: with several workers, runs fail
that succeed alone); one that fails again stops the study with its log. Real DVC queue, a one-stage project."""
import os
import sys
from pathlib import Path

import pytest
import yaml
from helpers.workspace import run

from micropatch.experiments.study import runs
from micropatch.experiments.study.project import StudyProject

# fails while the count file holds fewer than `fails` lines, then writes its output: a run that fails `fails` times
STAGE = ("python -c \"import pathlib, sys; p = pathlib.Path(sys.argv[1]); n = len(p.read_text().splitlines()) "
         "if p.exists() else 0; p.write_text('x\\n' * (n + 1)); sys.exit(1 if n < int(sys.argv[2]) else 0)\" "
         "{count} {fails} && echo done > out.txt")


def project(tmp_path: Path, monkeypatch, fails: int) -> StudyProject:
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(runs, "POLL_SECONDS", 2)
    repo = tmp_path / "repo"
    folder = repo / "study"
    folder.mkdir(parents=True)
    env = dict(os.environ)
    run(["git", "init", "-q"], repo, env)
    run(["dvc", "init", "-q"], repo, env)
    (folder / "params.yaml").write_text(yaml.safe_dump({
        "study": {"datasets": ["a"], "seeds": [0], "jobs": 1},
        "download": {"datasets": [{"name": "a"}]}, "roles": {"train_on": ["a"]}, "train": {"seed": 0}}))
    (folder / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {
        "cmd": STAGE.format(count=tmp_path / "count", fails=fails), "params": ["roles", "train"],
        "outs": ["out.txt"]}}}))
    (folder / ".gitignore").write_text("/out.txt\n")
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "study"], repo, env)
    return StudyProject(folder)


def test_a_run_the_queue_failed_once_is_queued_again_and_finishes(tmp_path, monkeypatch):
    study = project(tmp_path, monkeypatch, fails=1)
    runs.queue_and_run(study)
    assert set(study.finished()) == {"study-a-s0"}
    assert len((tmp_path / "count").read_text().splitlines()) == 2  # failed, then ran again


def test_a_run_that_fails_every_time_stops_the_study_with_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "RETRIES", 0)  # the retry is the test above's; one attempt is enough here
    study = project(tmp_path, monkeypatch, fails=99)
    with pytest.raises(RuntimeError, match=r"(?s)1 experiments failed: \['study-a-s0'\].*exited with 1"):
        runs.queue_and_run(study)
    assert len((tmp_path / "count").read_text().splitlines()) == 1
