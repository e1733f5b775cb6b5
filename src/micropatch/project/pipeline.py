"""`micropatch pipeline`: writes a project's dvc.yaml from its params.yaml and the stage scripts' imports.

One generator serves the root project and every record under results/: each gets a real dvc.yaml (DVC cannot
follow a symlinked one inside a git revision, so `dvc metrics diff REV` needs real files). Two facts come from
the code and the params, never from hand edits:
- each stage's code dependencies: its script plus every micropatch module it imports, transitively (read from
  the AST, function-local imports included), so an edit to any module a stage runs makes `dvc status` report it;
- the download stage's data dependencies: the local folders and archives named as sources in params.yaml. URL
  sources are pinned by their sha256 and `synthetic` ones by their params, so `data/sources` need not exist.
Every path is named once here and handed to the stage scripts as arguments. tests/test_pipeline_file.py fails
when a committed dvc.yaml differs from what this writes.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from micropatch.core.fileio import load_params, write_text
from micropatch.core.recipe import model_recipe
from micropatch.data.sources import local_sources

PACKAGE = Path(__file__).resolve().parents[1]  # src/micropatch
REPO = PACKAGE.parents[1]
STAGES = REPO / "stages"
HEADER = ("# Written by `micropatch pipeline` from params.yaml and the stage scripts' imports: do not edit by hand\n"
          "# (rerun `micropatch pipeline` after changing download sources or a stage's imports; CI checks it).\n")

# Paths inside a project, each named once.
RAW = "data/raw"
DOWNLOADS = "data/downloads"
PREPROCESSED = "data/preprocessed"
MANIFEST = "data/splits/manifest.csv"
PATCHES = "data/patches"
MODEL = "data/model/model.safetensors"      # the trained weights
RELEASE = "data/model/release.safetensors"  # with the operating point: what infer, score and predict use
TRAIN_STATE = "data/train_state/last.pt"   # outside DVC's outputs: DVC deletes outputs before a rerun
EPOCHS = "data/model/epochs"               # train.swa_epochs > 0: the last epochs' weights (training.EPOCHS_DIR)
STRATEGIES = "data/strategies"             # the study's averaged models, and their maps under predictions/
PREDICTIONS = "data/predictions"
METRICS = "metrics"
PLOTS = "metrics/plots"


def module_file(name: str) -> Path | None:
    """The source file of a micropatch module name ('micropatch.fileio'), or None for other packages."""
    if name != "micropatch" and not name.startswith("micropatch."):
        return None
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_modules(path: Path, package: str | None) -> set[str]:
    """Fully qualified micropatch module names a file imports anywhere in its body (relative ones resolved)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module
            names.add(stem)
            names.update(f"{stem}.{alias.name}" for alias in node.names)  # `from . import x` imports module x
    return {n for n in names if (f := module_file(n)) is not None and f.is_file()}


def code_deps(script: Path) -> list[Path]:
    """The script and every micropatch source file it imports, transitively (package __init__ files included)."""
    files, todo = {script}, [(script, None)]
    while todo:
        path, package = todo.pop()
        for name in imported_modules(path, package):
            parts = name.split(".")
            for k in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                file = module_file(".".join(parts[:k]))
                if file is not None and file.is_file() and file not in files:
                    files.add(file)
                    is_package = file.name == "__init__.py"
                    todo.append((file, ".".join(parts[:k]) if is_package else ".".join(parts[:k - 1])))
    return sorted(files)


def stage(script: str, project: Path, code: Path, args: list[str] = (), deps: list[str] = (), params: list = (),
          outs: list = (), metrics: list = (), plots: list = ()) -> dict:
    """One stage entry: cmd with arguments, code deps relative to the project, then data deps and the rest.

    code: the checkout whose stages/ and src/ the project runs (this repository, or a copy of it).
    """
    path = STAGES / f"{script}.py"
    rel = lambda p: os.path.relpath(code / Path(p).relative_to(REPO), project)  # noqa: E731
    entry = {"cmd": " ".join(["python", rel(path), *args]),
             "deps": list(deps) + [rel(p) for p in code_deps(path)]}
    for key, value in (("params", params), ("outs", outs), ("metrics", metrics), ("plots", plots)):
        if value:
            entry[key] = list(value)
    return entry


def untracked(path: str) -> dict:
    """An output kept in git rather than the DVC cache (metrics, manifests, figures)."""
    return {path: {"cache": False}}


def pipeline(project: Path, code: Path = REPO) -> dict:
    """The dvc.yaml mapping of a project folder (one holding params.yaml) running the code of `code`."""
    params = load_params(path=project / "params.yaml")
    domains = list(params["roles"]["test_on"])
    datasets = [entry["name"] for entry in params["download"]["datasets"]]
    compute = ["compute"] if "compute" in params else []
    # recipe study_baseline (micropatch.square) reads the RGB photographs of data/raw from patchify on
    recipe = ["recipe"] if "recipe" in params else []
    try:
        baseline = model_recipe(params) == "study_baseline"
    except ValueError as err:
        raise ValueError(f"{project / 'params.yaml'}: {err}") from None
    rgb = [RAW] if baseline else []
    square = recipe + (["study_baseline"] if baseline else [])
    swa = strategy_names(params, project)
    study = "study" in params
    stages = {
        "download": stage("download", project, code,
                          ["--params params.yaml", f"--out {RAW}", f"--downloads {DOWNLOADS}"],
                          deps=local_sources(params, project), params=["download"], outs=[RAW]),
        "preprocess": stage("preprocess", project, code, [f"--raw {RAW}", f"--out {PREPROCESSED}",
                                                    f"--summary {METRICS}/datasets.json"],
                            deps=[RAW], params=["preprocess"],
                            outs=[PREPROCESSED, untracked(f"{METRICS}/datasets.json")]),
        "characterise": stage("characterise", project, code, [f"--raw {RAW}", f"--preprocessed {PREPROCESSED}",
                                                        f"--out {METRICS}/characterisation.json",
                                                        f"--plots {METRICS}/characterisation"],
                              deps=[RAW, PREPROCESSED], params=["preprocess.fov_threshold"],
                              outs=[untracked(f"{METRICS}/characterisation"),
                                    untracked(f"{METRICS}/characterisation.json")]),
        "patient-split": stage("patient_split", project, code, [f"--preprocessed {PREPROCESSED}", f"--out {MANIFEST}"],
                               deps=[PREPROCESSED], params=["lesions", "split", "roles.train_on",
                                                            "roles.test_on", "audit.phash_threshold"],
                               outs=[untracked(MANIFEST)]),
        "patchify": stage("patchify", project, code, [f"--manifest {MANIFEST}", f"--preprocessed {PREPROCESSED}",
                                                f"--out {PATCHES}"],
                          deps=[MANIFEST, PREPROCESSED, *rgb], params=["lesions", "patchify", *square],
                          outs=[PATCHES]),
        "audit": stage("audit", project, code, [f"--manifest {MANIFEST}", f"--patches {PATCHES}", f"--out {METRICS}"],
                       deps=[MANIFEST, PATCHES], params=["audit"],
                       outs=[untracked(f"{METRICS}/leakage_report.md"), untracked(f"{METRICS}/leakage.json")]),
        "train": stage("train", project, code, [f"--patches {PATCHES}", f"--manifest {MANIFEST}", f"--model {MODEL}",
                                          f"--state {TRAIN_STATE}", f"--history {METRICS}/train_history.tsv",
                                          f"--summary {METRICS}/train.json"],
                       deps=[f"{METRICS}/leakage.json", PATCHES, MANIFEST],  # a leak stops the pipeline here
                       params=["lesions", "train", "preprocess", "patchify", *compute, *square],
                       outs=[MODEL, *([EPOCHS] if swa else []), untracked(f"{METRICS}/train_history.tsv"),
                             untracked(f"{METRICS}/train.json")]),
        "operating-point": stage("operating_point", project, code, [
            f"--model {MODEL}", f"--manifest {MANIFEST}", f"--preprocessed {PREPROCESSED}", f"--out {RELEASE}",
            f"--report {METRICS}/operating_point.json"],
            deps=[MODEL, MANIFEST, PREPROCESSED, *rgb], params=["infer", *compute],
            outs=[RELEASE, untracked(f"{METRICS}/operating_point.json")]),
        "infer": {"foreach": domains, "do": stage(
            "infer", project, code, ["${item}", f"--model {RELEASE}", f"--manifest {MANIFEST}",
                               f"--preprocessed {PREPROCESSED}", f"--out {PREDICTIONS}/${{item}}"],
            deps=[RELEASE, MANIFEST, PREPROCESSED, *rgb], params=["infer", "roles.test_on.${item}", *compute],
            outs=[f"{PREDICTIONS}/${{item}}"])},
        "score": stage("score", project, code, [f"--predictions {PREDICTIONS}", f"--preprocessed {PREPROCESSED}",
                                          f"--manifest {MANIFEST}", f"--history {METRICS}/train_history.tsv",
                                          f"--out {METRICS}"],
                       deps=[f"{PREDICTIONS}/{d}" for d in domains] + [PREPROCESSED, MANIFEST, RAW,
                                                                       f"{METRICS}/train_history.tsv"],
                       params=["score", "roles"],
                       outs=[untracked(PLOTS), untracked(f"{METRICS}/per_image"),
                             untracked(f"{METRICS}/cross_domain.md"), untracked(f"{METRICS}/cross_domain.json"),
                             untracked(f"{METRICS}/domains")],
                       metrics=headline(f"{METRICS}/headline", study)),
    }
    if swa:
        stages |= strategy_stages(swa, domains, project, code, compute, rgb, study)
    # the history's columns (training.train): selection-split scores, and val's as monitor_* when selection is on tune
    history = ["train_loss", "select_loss", "select_patch_dice", "select_dice", "select_aupr_11", "select_ap"]
    if params["split"].get("tune_fraction", 0) > 0 and params["train"].get("monitor_val", True):
        history += ["monitor_dice", "monitor_aupr_11", "monitor_ap"]
    plots = [
        {f"{PLOTS}/pr": {"template": "simple", "x": "recall", "y": "precision"}},
        {f"{PLOTS}/froc": {"template": "simple", "x": "fps_per_image", "y": "sensitivity"}},
        {f"{PLOTS}/recall_by_area": {"template": "simple", "x": "area_px_median", "y": "recall"}},
        {f"{PLOTS}/recall_by_contrast": {"template": "simple", "x": "contrast_median", "y": "recall"}},
        f"{PLOTS}/curves.png", f"{PLOTS}/training.png", f"{PLOTS}/cross_domain.png", f"{PLOTS}/panels",
        {"training curves": {"template": "linear", "x": "epoch", "y": {f"{METRICS}/train_history.tsv": history}}},
        # the study's figures 2 and 1, one series per dataset
        {"labelling style (log10 mean lesion area, ppm of the FOV, against log10 lesion count, per image)": {
            "template": "scatter", "x": "log10_count",
            "y": {f"{METRICS}/characterisation/labelling_{d}.csv": "log10_mean_area_ppm" for d in datasets}}},
        {"image quality (not MCF-Net: docs/explanation/characterisation.md)": {
            "template": "scatter", "x": "focus",
            "y": {f"{METRICS}/characterisation/quality_{d}.csv": "evenness" for d in datasets}}},
    ]
    return {"stages": stages, "plots": plots}


def strategy_names(params: dict, project: Path) -> list[str]:
    """The averaged models a project's pipeline makes (stage swa: one per `strategies.swa_parts`), none unless
    train.swa_epochs > 0."""
    if not params["train"].get("swa_epochs", 0):
        return []
    where = project / "params.yaml"
    if "strategies" not in params:
        raise ValueError(f"{where}: train.swa_epochs > 0 needs a `strategies` section (swa_parts, bn_patches)")
    if params["split"].get("tune_fraction", 0) > 0:  # the averaged models carry no operating point of their own
        raise ValueError(f"{where}: train.swa_epochs > 0 compares models at the paper's threshold 0.5: set "
                         "split.tune_fraction: 0 (no model-specific operating point)")
    return [f"swa_{part}" for part in params["strategies"]["swa_parts"]]


def headline(folder: str, study: bool) -> list:
    """The metrics a score stage declares: its headline files (evaluation.HEADLINE_KEYS, one file per domain and
    lesion), the one table `dvc metrics show` and `diff` print; every other score file is a plain output. A study
    project declares none: its experiments' scores live in their experiment commits, and its committed results
    are the study's tables (metrics/study), so declaring them would make `dvc metrics` warn of missing files."""
    return [] if study else [untracked(folder)]


def strategy_stages(names: list[str], domains: list[str], project: Path, code: Path, compute: list,
                    rgb: list, study: bool) -> dict:
    """Stages swa (the averaged models and their maps of every domain, under data/strategies/predictions/<name>)
    and score-strategy (the score stage script on each, metrics under metrics/strategies/<name>)."""
    maps = f"{STRATEGIES}/predictions"
    out = f"{METRICS}/strategies/${{item}}"
    return {
        "swa": stage("swa", project, code, [f"--epochs {EPOCHS}", f"--model {MODEL}", f"--patches {PATCHES}",
                                            f"--manifest {MANIFEST}", f"--preprocessed {PREPROCESSED}",
                                            f"--out {STRATEGIES}", f"--predictions {maps}"],
                     deps=[EPOCHS, MODEL, PATCHES, MANIFEST, PREPROCESSED, *rgb],
                     params=["strategies", "train.batch_size", "train.seed", "infer", "roles.test_on", *compute],
                     outs=[f"{STRATEGIES}/{name}.safetensors" for name in names] + [f"{maps}/{name}"
                                                                                   for name in names]),
        "score-strategy": {"foreach": names, "do": stage(
            "score", project, code, [f"--predictions {maps}/${{item}}", f"--preprocessed {PREPROCESSED}",
                                     f"--manifest {MANIFEST}", f"--history {METRICS}/train_history.tsv",
                                     f"--out {out}"],
            deps=[f"{maps}/${{item}}", PREPROCESSED, MANIFEST, RAW, f"{METRICS}/train_history.tsv"],
            params=["score", "roles"],
            outs=[untracked(f"{out}/plots"), untracked(f"{out}/per_image"), untracked(f"{out}/cross_domain.md"),
                  untracked(f"{out}/cross_domain.json"), untracked(f"{out}/domains")],
            metrics=headline(f"{out}/headline", study))},
    }


def render(project: Path, code: Path = REPO) -> str:
    """dvc.yaml's text for a project folder running the code of `code` (this repository by default)."""
    return HEADER + yaml.safe_dump(pipeline(Path(project).resolve(), Path(code).resolve()), sort_keys=False,
                                   width=120)


def projects() -> list[Path]:
    """The root project and every record folder under results/ (each holds a params.yaml)."""
    return [REPO] + sorted(p.parent for p in (REPO / "results").glob("*/params.yaml"))


def is_current(project: Path) -> bool:
    """True when a project's dvc.yaml is a real file holding exactly what render() writes."""
    path = Path(project) / "dvc.yaml"
    return not path.is_symlink() and path.is_file() and path.read_text() == render(project)


def write(project: Path) -> bool:
    """Write a project's dvc.yaml (replacing a symlink); True when it changed."""
    if is_current(project):
        return False
    path = Path(project) / "dvc.yaml"
    path.unlink(missing_ok=True)
    write_text(path, render(project))
    return True


def fresh_copy(dest: Path) -> None:
    """Copy into dest the files a fresh clone of this repository has: tracked ones plus untracked ones git does not
    ignore, as they are in the working tree (for checks that must see what a newcomer sees)."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        if (REPO / name).is_file():
            (Path(dest) / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, Path(dest) / name)
