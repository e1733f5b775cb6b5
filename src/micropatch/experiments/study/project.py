"""A study project: a folder with a params.yaml holding a `study` section, inside this git + DVC repository; its
runs (one DVC experiment per training-set combination and seed) and their outputs, read back from git and the DVC
cache, never from a workspace that may have moved on."""
from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from micropatch.core.fileio import InputError, load_params, write_text

BASELINE = "baseline"
ENSEMBLE = "ensemble"
STYLES = ("fine", "mixed", "coarse")  # a combination's labelling style: all fine, all coarse, or anything between


def combinations(datasets: list[str]) -> list[tuple[str, ...]]:
    """Every non-empty combination of the training datasets (2^D - 1), by size, then in the given order."""
    return [c for k in range(1, len(datasets) + 1) for c in itertools.combinations(datasets, k)]


def experiment_name(project: str, combination: tuple[str, ...], seed: int) -> str:
    """The DVC experiment's name (a git ref name): the project folder's name, the datasets joined by '+', then the
    seed. The folder's name because every study project of a repository shares its experiment refs: two projects
    at one commit training on the same combination (results/study-idrid and results/study-combinations both have
    retinal_lesions alone) would otherwise find each other's runs finished."""
    return f"{project}-{'+'.join(combination)}-s{seed}"


def combination_style(combination: tuple[str, ...], styles: dict[str, str]) -> str:
    """fine or coarse when every dataset of it is labelled so (characterisation stage), else mixed."""
    found = {styles.get(d, "mixed") for d in combination}
    return found.pop() if len(found) == 1 and found <= {"fine", "coarse"} else "mixed"


class StudyProject:
    """A study project folder and its experiments: what they are, which finished, and their outputs."""

    def __init__(self, project: Path):
        self.folder = Path(project).resolve()
        if not (self.folder / "params.yaml").is_file():
            raise InputError(f"{self.folder}: no params.yaml here; --project names a study project folder (such as "
                             "results/study-combinations), relative to the current directory")
        self.params = load_params(path=self.folder / "params.yaml")
        if "study" not in self.params:
            raise InputError(f"{self.folder / 'params.yaml'}: no `study` section (datasets, seeds, jobs)")
        self.settings = self.params["study"]
        self.root = Path(self.git("rev-parse", "--show-toplevel").strip())
        self.rel = self.folder.relative_to(self.root).as_posix()
        self.work = self.folder / "data" / "study"  # ensembles' and soups' maps (ignored; rebuilt from the exps)
        self.out = self.folder / "metrics" / "study"
        self.timing = {}  # queue_and_run's measured time, for metrics/study/time.json
        self.committed = {}  # experiment name -> when its commit was made (dvc exp show)
        self.filesystems = {}  # rev -> its DVCFileSystem (filesystem)
        unknown = set(self.settings["datasets"]) - {e["name"] for e in self.params["download"]["datasets"]}
        if unknown:
            raise InputError(f"{self.folder / 'params.yaml'}: study.datasets {sorted(unknown)} are not downloaded")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.folder, check=True, capture_output=True, text=True).stdout

    def dvc(self, *args: str, env: dict | None = None) -> str:
        dvc = Path(sys.executable).with_name("dvc")
        result = subprocess.run([str(dvc) if dvc.exists() else "dvc", *args], cwd=self.folder, text=True,
                                capture_output=True, env=os.environ | (env or {}))
        if result.returncode:
            raise RuntimeError(f"dvc {' '.join(args)} failed in {self.folder}:\n{result.stdout}{result.stderr}")
        return result.stdout

    def runs(self) -> list[dict]:
        """Every (combination, seed) of the study, with its experiment name."""
        return [{"combination": c, "seed": s, "name": experiment_name(self.folder.name, c, s)}
                for c in combinations(self.settings["datasets"]) for s in self.settings["seeds"]]

    def finished(self) -> dict[str, str]:
        """name -> commit of the study's experiments that succeeded on the current commit."""
        shown = json.loads(self.dvc("exp", "show", "--json", "--no-fetch", "--rev", "HEAD"))
        found = {}
        for baseline in shown:
            for exp in baseline.get("experiments") or []:
                state = (exp.get("executor") or {}).get("state", "success")
                rev = exp["revs"][0]
                if exp.get("name") and state == "success" and not rev.get("error") and rev["rev"] != "workspace":
                    found[exp["name"]] = rev["rev"]
                    self.committed[exp["name"]] = rev["data"]["timestamp"]
        return found

    def read(self, path: str, rev: str) -> str:
        """A text output of an experiment: from its git commit when git holds it (the metrics and the split
        manifest, `cache: false`), else from the DVC cache. dvc.api.read builds a whole repository object per call
        (seconds each; the study reads some 200 of them), git show takes milliseconds."""
        shown = subprocess.run(["git", "show", f"{rev}:{self.rel}/{path}"], cwd=self.root, capture_output=True)
        if shown.returncode == 0:
            return shown.stdout.decode()
        with self.filesystem(rev).open(f"{self.rel}/{path}", "r") as file:
            return file.read()

    def fetch(self, path: str, rev: str, dest: Path) -> Path:
        """Copy an output (file or folder) of an experiment out of the DVC cache."""
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.filesystem(rev).get(f"{self.rel}/{path}", str(dest), recursive=True)
        return dest

    def fetch_manifest(self, name: str, rev: str) -> Path:
        """An experiment's split manifest, written under the study's work folder, where the strategies read it."""
        manifest = self.work / "manifests" / f"{name}.csv"
        write_text(manifest, self.read("data/splits/manifest.csv", rev))
        return manifest

    def filesystem(self, rev: str):
        """The DVC file system of the repository at `rev`, one per rev: building one reads every dvc.yaml and lock
        of the repository at that commit (about 6 s here), which each fetch from it would otherwise repeat."""
        from dvc.api import DVCFileSystem

        if rev not in self.filesystems:
            self.filesystems[rev] = DVCFileSystem(str(self.root), rev=rev)
        return self.filesystems[rev]
