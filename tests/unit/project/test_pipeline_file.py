"""dvc.yaml tells the truth: it is a real file in every project, current with params.yaml, and every stage lists
every micropatch module its script imports (checked against what a fresh interpreter actually loads)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.workspace import REPO

from micropatch.project.pipeline import code_deps, projects, render


@pytest.mark.parametrize("project", projects(), ids=lambda p: str(p.relative_to(REPO)) or "root")
def test_committed_dvc_yaml_is_a_real_file_and_current(project):
    path = project / "dvc.yaml"
    assert not path.is_symlink(), f"{path} is a link: DVC cannot read it inside a git revision"
    assert path.read_text() == render(project), "run `micropatch pipeline` and commit dvc.yaml"


def loaded_modules(script: Path) -> set[Path]:
    """micropatch source files a fresh interpreter has loaded after importing the script as a module."""
    code = (f"import importlib.util, json, sys\n"
            f"spec = importlib.util.spec_from_file_location('stage', {str(script)!r})\n"
            f"spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            f"print(json.dumps([m.__file__ for n, m in sys.modules.items() if n.startswith('micropatch')]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {Path(f).resolve() for f in json.loads(out.splitlines()[-1])}


@pytest.mark.parametrize("script", sorted((REPO / "stages").glob("*.py")), ids=lambda p: p.stem)
def test_every_module_a_stage_loads_is_a_dependency(script):
    """An independent oracle for the AST walk: what importing the stage really loads must all be listed."""
    loaded, checked = loaded_modules(script), 0
    for project in projects():  # every stage that runs the script, in every project (swa: the study's only)
        for name, stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"].items():
            entry = stage["do"] if "do" in stage else stage
            if f"stages/{script.name} " not in entry["cmd"] + " ":
                continue
            deps = {(project / d).resolve() for d in entry["deps"]}
            missing = loaded - deps
            assert not missing, f"{project}/dvc.yaml stage {name} misses {sorted(str(m) for m in missing)}"
            assert set(code_deps(script)) <= deps
            checked += 1
    assert checked, f"no dvc.yaml stage runs {script.name}"


def test_weight_averaging_adds_its_stages_only_when_asked(tmp_path):
    """train.swa_epochs > 0: train keeps its last epochs, stage swa averages them and score-strategy scores each
    averaged model; without it the pipeline is the method's; asking without a strategies section, or with a tune
    split whose operating point the averaged models would not have, is refused by name."""
    from micropatch.project.pipeline import pipeline

    study = REPO / "results" / "study-combinations"
    params = yaml.safe_load((study / "params.yaml").read_text())
    stages = pipeline(study)["stages"]
    assert "data/model/epochs" in stages["train"]["outs"]
    assert stages["score-strategy"]["foreach"] == ["swa_encoder", "swa_decoder", "swa_full"]
    assert "data/strategies/predictions/swa_full" in stages["swa"]["outs"]
    root = pipeline(REPO)["stages"]
    assert "swa" not in root and "data/model/epochs" not in root["train"]["outs"]
    for edit, message in ((lambda p: p.pop("strategies"), "strategies"),
                          (lambda p: p["split"].update(tune_fraction=0.1), "tune_fraction")):
        changed = yaml.safe_load(yaml.safe_dump(params))
        edit(changed)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(changed))
        with pytest.raises(ValueError, match=message):
            pipeline(tmp_path)


def test_function_local_imports_are_followed(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    from micropatch.core.compute import configure\n"
                      "    import micropatch.core.recipe\n")
    names = {p.name for p in code_deps(script)}
    assert {"compute.py", "recipe.py", "__init__.py", "stage.py"} <= names


def test_download_depends_on_local_sources_only(tmp_path):
    from micropatch.data.sources import local_sources

    params = {"download": {"datasets": [
        {"name": "a", "adapter": "idrid", "source": "data/sources/a"},
        {"name": "b", "adapter": "ddr", "source": "https://example.org/ddr.zip", "sha256": "0" * 64},
        {"name": "c", "adapter": "eophtha", "source": "synthetic"},
        {"name": "d", "adapter": "idrid", "source": "/datasets/IDRiD"}]}}
    assert local_sources(params, tmp_path) == ["/datasets/IDRiD", "data/sources/a"]


def test_every_part_of_a_multipart_zip_is_a_dependency(tmp_path, monkeypatch):
    from micropatch.data.sources import local_sources

    for number in (1, 2, 3):
        (tmp_path / f"DDR-dataset.zip.{number:03d}").write_bytes(b"part")
    monkeypatch.setenv("DATASETS", str(tmp_path))
    params = {"download": {"datasets": [{"name": "ddr", "adapter": "ddr", "source": "$DATASETS/DDR-dataset.zip.001"}]}}
    assert local_sources(params, tmp_path / "project") == [str(tmp_path / f"DDR-dataset.zip.00{n}") for n in (1, 2, 3)]
    monkeypatch.delenv("DATASETS")
    with pytest.raises(Exception, match="DATASETS"):
        local_sources(params, tmp_path)
