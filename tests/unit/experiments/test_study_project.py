"""A repository's study projects share its experiment refs: their runs must not share names."""
import subprocess

import yaml

from micropatch.experiments.study.project import StudyProject


def study_project(folder, datasets):
    folder.mkdir(parents=True)
    params = {"study": {"datasets": datasets, "seeds": [0], "jobs": 1},
              "download": {"datasets": [{"name": d, "adapter": "idrid", "source": d} for d in datasets]}}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder


def test_two_projects_training_on_one_combination_name_their_runs_apart(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    coarse_study = StudyProject(study_project(tmp_path / "results/study-idrid", ["idrid", "retinal_lesions"]))
    all_study = StudyProject(study_project(tmp_path / "results/study-combinations", ["synthetic", "retinal_lesions"]))
    shared = ("retinal_lesions",)
    ours = {r["name"] for r in coarse_study.runs() if r["combination"] == shared}
    theirs = {r["name"] for r in all_study.runs() if r["combination"] == shared}
    assert len(ours) == len(theirs) == 1 and ours != theirs
    names = [r["name"] for r in coarse_study.runs() + all_study.runs()]
    assert len(set(names)) == len(names) == 6
    assert subprocess.run(["git", "check-ref-format", f"refs/exps/{names[0]}"]).returncode == 0  # a ref name
