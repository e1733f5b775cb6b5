"""`micropatch tune`: an Optuna study over the search space of params.yaml's `tune` section.

Each trial is the project's own training (training.train) on the pipeline's train patches, selected and scored
after every epoch on the selection split (tune when the manifest has one, else val: never a test domain). The
score of each epoch is reported to the pruner; the trial's value is its best epoch's score. A trial whose
`patchify.background_keep` differs from the pipeline's gets its own train patch set, built by the patchify code
from the preprocessed images and cached per value.

Storage is any SQLAlchemy URL: a SQLite file by default (nothing to start), PostgreSQL (or MySQL) for workers on
several machines sharing one study. Every worker heartbeats its running trial; a trial whose worker died
(killed, machine lost) is marked failed by the next worker after the grace period, and retried once with the
same parameters (Optuna's RetryHeartbeatStaleTrialCallback). The study stops when `trials` trials have finished
(complete or pruned), whichever workers ran them. Each trial is also a dvclive run (params, per-epoch scores),
saved as a DVC experiment when the working directory is a DVC repository, so `dvc exp show` lists the trials.
"""
from __future__ import annotations

import json
import logging
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from micropatch.core.fileio import InputError, load_params, staged_folder, write_json, write_text
from micropatch.data.manifest import read_manifest
from micropatch.data.patches import build_patch_set, read_patch_meta, write_patch_set

log = logging.getLogger(__name__)

SEARCHABLE = {"train", "patchify"}  # params sections a search-space key may name ("train.lr")
PRUNERS = ("median", "hyperband", "none")


@dataclass(frozen=True)
class Workspace:
    """The pipeline files a trial reads, and where the study's own files go."""

    params: Path
    patches: Path           # the pipeline's patch sets (train, val[, tune])
    preprocessed: Path      # to build train patch sets at other background_keep values
    manifest: Path
    work: Path              # cached patch sets, per-trial dvclive folders, best.json


def suggest(trial, space: dict[str, Any]) -> dict[str, Any]:
    """One value per search-space key: a list is a categorical choice, {low, high[, log][, step]} a range (int
    when both ends are integers)."""
    values = {}
    for key, spec in space.items():
        section, _, name = key.partition(".")
        if section not in SEARCHABLE or not name:
            raise InputError(f"params.yaml tune.space: key {key!r} must name a parameter as section.name, section one "
                             f"of {sorted(SEARCHABLE)} (e.g. train.lr)")
        if isinstance(spec, list) and spec:
            values[key] = trial.suggest_categorical(key, spec)
        elif isinstance(spec, dict) and {"low", "high"} <= set(spec) <= {"low", "high", "log", "step"}:
            low, high, log_scale = spec["low"], spec["high"], bool(spec.get("log", False))
            if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
                values[key] = trial.suggest_int(key, low, high, step=spec.get("step", 1), log=log_scale)
            else:
                values[key] = trial.suggest_float(key, float(low), float(high), step=spec.get("step"), log=log_scale)
        else:
            raise InputError(f"params.yaml tune.space.{key}: give a list of choices or {{low, high[, log, step]}}, "
                             f"got {spec!r}")
    return values


def split_sections(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"train.lr": 1e-3} -> {"train": {"lr": 1e-3}}."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def train_patch_set(ws: Workspace, params: dict, background_keep: float) -> Path:
    """The train patch set at this background_keep: the pipeline's when it matches, else one built by the patchify
    code (cached under the work folder, so later trials with the same value reuse it)."""
    pipeline_set = ws.patches / "train"
    if math.isclose(read_patch_meta(pipeline_set)["background_keep"], background_keep):
        return pipeline_set
    folder = ws.work / "patches" / f"train-background-{background_keep:g}"
    if (folder / "meta.json").is_file():
        return folder
    settings = params["patchify"]
    rows = [r for r in read_manifest(ws.manifest) if r["split"] == "train"]
    images, masks, index, per_image = build_patch_set(
        rows, ws.preprocessed, params["lesions"], settings["size"], settings["stride"], background_keep,
        settings["seed"], settings["hard_negative_keep"], settings["lesion_jitter"])
    with staged_folder(folder) as staging:  # concurrent workers: each builds in its own staging folder
        write_patch_set(staging, images, masks, index, {"split": "train", "background_keep": background_keep,
                                                        "patches": len(index), "per_image": per_image})
    return folder


def make_pruner(settings: dict):
    import optuna

    kind = settings["type"]
    if kind == "median":  # prune below the median of earlier trials at the same epoch
        return optuna.pruners.MedianPruner(n_startup_trials=settings["startup_trials"],
                                           n_warmup_steps=settings["warmup_epochs"])
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, settings["warmup_epochs"]))
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise InputError(f"params.yaml tune.pruner.type {kind!r}: choose one of {PRUNERS}")


def open_storage(url: str, heartbeat_s: int, grace_s: int, max_retry: int):
    """An RDB storage with heartbeats: a dead worker's trial fails after grace_s and is retried max_retry times."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from sqlalchemy.exc import SQLAlchemyError

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats: since 2.8
    try:
        return RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=grace_s,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
                          engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None)
    except (optuna.exceptions.StorageInternalError, ImportError, ValueError, SQLAlchemyError) as err:
        raise InputError(f"tune storage {url!r}: {err} (a SQLAlchemy URL: sqlite:///path.db, "
                         "postgresql+psycopg2://user@host:port/db)") from err


def run_study(ws: Workspace, storage_url: str, study_name: str, n_trials: int, seed: int, heartbeat_s: int = 60,
              grace_s: int = 180, max_retry: int = 1, dvc_experiments: bool = True):
    """Join (or create) the study and run trials until it holds n_trials finished ones; returns the study."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from micropatch.training.config import TrainConfig
    from micropatch.training.trainer import TrainingDiverged, train

    finished_states = (TrialState.COMPLETE, TrialState.PRUNED)  # what the budget counts, over all workers
    params = load_params(path=ws.params)
    tune = params["tune"]
    objective_name = tune["objective"]
    selection = "tune" if (ws.patches / "tune").is_dir() else "val"
    storage = open_storage(storage_url, heartbeat_s, grace_s, max_retry)
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=make_pruner(tune["pruner"]))

    def objective(trial) -> float:
        sampled = suggest(trial, tune["space"])
        sections = split_sections(sampled)
        background_keep = sections.get("patchify", {}).get("background_keep", params["patchify"]["background_keep"])
        cfg = TrainConfig(**(params["train"] | tune["train"] | sections.get("train", {})
                             | {"select_on": objective_name, "processes": 1}))
        trial_dir = ws.work / study_name / "trials" / f"{trial.number:04d}"
        if trial_dir.exists():  # a retried trial's number is new; an old folder is a killed worker's leftovers
            shutil.rmtree(trial_dir)
        trial_dir.mkdir(parents=True)
        train_dir = train_patch_set(ws, params, background_keep)
        live = open_live(trial_dir, f"{study_name}-{trial.number:04d}", dvc_experiments)
        live.log_params({"trial": trial.number, "study": study_name} | sampled)

        def report(history: list[dict]) -> None:
            row = history[-1]
            for key in ("loss", "patch_dice", "dice", "aupr_11", "ap"):
                live.log_metric(f"{selection}/{key}", row[f"select_{key}"])
            live.log_metric("train/loss", row["train_loss"])
            live.next_step()
            trial.report(row[f"select_{objective_name}"], row["epoch"])
            # after the last epoch there is nothing left to save: the trial completes, whatever the pruner says
            if row["epoch"] < cfg.epochs and trial.should_prune():
                raise optuna.TrialPruned(f"epoch {row['epoch']}: {objective_name} "
                                         f"{row[f'select_{objective_name}']:.4f} below the pruner's bar")

        state = "failed"
        try:
            summary = train(train_dir, ws.patches / selection, params["lesions"], cfg, trial_dir / "model.safetensors",
                            trial_dir / "state.pt", fingerprint=f"{study_name}/{trial.number}", on_epoch=report)
            value = summary["best_select_score"]
            live.summary[f"{selection}/best_{objective_name}"] = value
            state = "complete"
            return value
        except optuna.TrialPruned:
            state = "pruned"
            raise
        finally:
            live.summary["state"] = state
            close_live(live)
            for leftover in ("model.safetensors", "state.pt"):  # the best trial is retrained by `dvc repro`
                (trial_dir / leftover).unlink(missing_ok=True)
            log.info("tune: trial %d %s (worker done with it)", trial.number, state)

    done = len(study.get_trials(deepcopy=False, states=finished_states))
    if done >= n_trials:
        log.info("tune: study %s already holds %d finished trials (budget %d): nothing to run", study_name, done,
                 n_trials)
    else:
        study.optimize(objective, n_trials=n_trials - done,
                       callbacks=[MaxTrialsCallback(n_trials, states=finished_states)],
                       catch=(InputError, TrainingDiverged))  # a diverging configuration fails its trial only
    write_summary(study, ws.work / study_name / "best.json", objective_name, selection)
    return study


def open_live(folder: Path, name: str, dvc_experiments: bool):
    from dvclive import Live

    # its own dvc.yaml in the trial's folder, never the project's (which `micropatch pipeline` writes); the
    # experiment is saved by close_live, which names the stages to commit
    live = Live(dir=str(folder), save_dvc_exp=False, dvcyaml=str(folder / "dvc.yaml"))
    live.experiment_name = name if dvc_experiments else None
    return live


def experiment_targets(project_file: Path = Path("dvc.yaml")) -> list[str] | None:
    """The stages a trial's DVC experiment commits besides its dvclive folder: the patchify stage (the patch sets
    the trial read) when the project has one. Without targets DVC commits every stage of every dvc.yaml in the
    repository, the records' under results/ included, whose raw data need not be on this machine."""
    import yaml

    if project_file.is_file() and "patchify" in (yaml.safe_load(project_file.read_text()) or {}).get("stages", {}):
        return [f"{project_file}:patchify"]
    return None


def close_live(live) -> None:
    """End the dvclive run and save it as a DVC experiment when asked and the working directory is a DVC
    repository; an experiment that cannot be saved (another worker holds the repository lock, no git commit yet)
    costs a warning, not the trial."""
    live.end()
    if not live.experiment_name:
        return
    try:
        from dvc.repo import Repo

        Repo(".").experiments.save(targets=experiment_targets(), name=live.experiment_name,
                                   include_untracked=[live.dir], force=True)
    except Exception as err:  # noqa: BLE001 - dvc raises many kinds; the trial's result is in the study already
        log.warning("tune: could not save %s as a DVC experiment: %s", live.dir, err)


def write_summary(study, path: Path, objective_name: str, selection: str) -> dict:
    from optuna.trial import TrialState

    counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    summary = {"study": study.study_name, "objective": f"{selection} {objective_name}", "trials": counts}
    try:
        best = study.best_trial
        summary |= {"best_trial": best.number, "best_value": best.value, "best_params": best.params}
    except ValueError:  # no complete trial yet
        pass
    write_json(path, summary)
    log.info("tune: %s", json.dumps(summary))
    return summary


def write_best(params_path: Path, best_params: dict[str, Any]) -> None:
    """Write the best trial's values into params.yaml in place: only each value's characters change, the comments,
    the other keys and the layout stay as they are. The result is read back and must hold exactly the old params
    with the new values, or nothing is written."""
    import yaml

    text = params_path.read_text()
    lines = text.splitlines(keepends=True)
    expected = yaml.safe_load(text)
    for section, values in split_sections(best_params).items():
        start = next((i for i, line in enumerate(lines) if line.split("#")[0].rstrip() == f"{section}:"), None)
        for name, value in values.items():
            if start is None or name not in (expected.get(section) or {}):
                raise InputError(f"{params_path}: {section}.{name} does not exist; the search space names a "
                                 "parameter the pipeline does not have")
            for i in range(start + 1, len(lines)):
                if lines[i][:1] not in (" ", "\n", "#"):
                    break  # the next top-level section
                match = re.match(rf"^  {re.escape(name)}:( *)([^#\n]*?)( *#.*)?(\n?)$", lines[i])
                if match:
                    new = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).removesuffix("\n...\n")
                    head = f"  {name}:{match[1] or ' '}{new.strip()}"
                    if match[3]:  # the comment stays in its column (one space after a longer value)
                        column = match.start(3) + len(match[3]) - len(match[3].lstrip())
                        head = head + " " * max(1, column - len(head)) + match[3].lstrip()
                    lines[i] = head + match[4]
                    break
            else:
                raise InputError(f"{params_path}: found no line '  {name}: value' under '{section}:' to write "
                                 f"{value!r} into (a flow-style section?); set it by hand")
            expected[section][name] = value
    updated = "".join(lines)
    if yaml.safe_load(updated) != expected:
        raise InputError(f"{params_path}: writing {best_params} would change more than those values; set them by hand")
    write_text(params_path, updated)
