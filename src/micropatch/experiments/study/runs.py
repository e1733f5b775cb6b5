"""Running a study: its experiments through DVC's queue (those not yet finished on this commit), each run's own
scores read back, then the strategies across seeds and the tables; the time it all took."""
from __future__ import annotations

import json
import logging
import os
import re
import time

from tqdm import tqdm

from micropatch.core.fileio import InputError, write_json
from micropatch.data.manifest import read_manifest
from micropatch.evaluation.score import is_zero_shot
from micropatch.experiments.study.project import BASELINE, StudyProject
from micropatch.experiments.study.scores import summary_scores
from micropatch.experiments.study.strategies import cross_seed_records
from micropatch.experiments.study.tables import write_tables
from micropatch.project.pipeline import strategy_names

log = logging.getLogger(__name__)


def start_workers(project: StudyProject) -> None:
    """`dvc queue start` with the project's number of workers. The workers' stages import the experiment's own
    copy of src/ (a relative path from the project folder of each temporary clone), not the micropatch this
    command runs (an editable install points at one checkout)."""
    project.dvc("queue", "start", "--jobs", str(project.settings["jobs"]),
                env={"PYTHONPATH": os.path.relpath(project.root / "src", project.folder)})


WORKERS = re.compile(r"Worker status: (\d+) active, (\d+) idle")


def stalled(status: str) -> bool:
    """Whether `dvc queue status` shows runs still queued and no worker left to run them. DVC's workers share a
    filesystem broker, and two workers reading one message can end both (an empty message read as JSON): seen
    here with 12 of 14 study runs still queued."""
    workers = WORKERS.search(status)
    queued = any(line.split()[-1:] == ["Queued"] for line in status.splitlines()[1:])
    return bool(queued and workers and workers.groups() == ("0", "0"))


# DVC's queue with more than one worker fails some runs that succeed alone, with an empty log (treeverse/dvc#10673,
# open; CI saw 1 of 6 runs of the reduced study fail so): each failed run is queued once more before the study stops
RETRIES = 1
POLL_SECONDS = 30  # between two looks at the queue


def queue_and_run(project: StudyProject) -> None:
    """Queue the runs not yet finished on this commit, start jobs workers, wait for the queue to empty; runs that
    failed are queued again RETRIES times, then the study stops with their logs."""
    if project.git("status", "--porcelain", "--untracked-files=no", "--", "."):
        raise InputError(f"{project.folder}: commit the study project first: each experiment runs the committed "
                         "code and params (plus the overrides), and the study reads them back from git")
    done = project.finished()
    todo = [r for r in project.runs() if r["name"] not in done]
    log.info("study: %d runs, %d finished on this commit, %d to queue", len(project.runs()), len(done), len(todo))
    if not todo:
        return
    started = time.monotonic()  # queueing included: each `dvc exp run --queue` stashes the workspace
    for attempt in range(1 + RETRIES):
        failed = run_queued(project, todo)
        if not failed:
            break
        logs = failure_logs(project, failed)
        if attempt == RETRIES:
            raise RuntimeError(f"study: {len(failed)} experiments failed: {sorted(failed)}; their logs:\n{logs}\n"
                               f"see `dvc queue logs NAME` in {project.folder}, fix, and run the study again "
                               "(finished ones are kept)")
        log.warning("study: %d experiments failed (%s); queueing them once more (treeverse/dvc#10673). Their "
                    "logs:\n%s", len(failed), ", ".join(sorted(failed)), logs)
        todo = [r for r in todo if r["name"] in failed]
    minutes = (time.monotonic() - started) / 60
    ran = len([r for r in project.runs() if r["name"] not in done])
    log.info("study: %d experiments in %.1f min with %d workers", ran, minutes, project.settings["jobs"])
    project.timing = {"experiments_run": ran, "of": len(project.runs()), "workers": project.settings["jobs"],
                      "experiments_minutes": round(minutes, 1), "cpu_cores": os.cpu_count()}


def run_queued(project: StudyProject, todo: list[dict]) -> set[str]:
    """Queue these runs, start the workers, wait until each has succeeded or failed; the names that failed."""
    project.dvc("queue", "remove", "--failed")  # an earlier attempt's failures would read as this one's
    # no --force: a stage whose code, params and inputs a finished run already had is restored from DVC's run
    # cache, not rerun (download and preprocess are the same in every run, patchify in every seed of a
    # combination; train never is: its resume state is a persistent output); the outputs are the same bytes in
    # the reproducible compute mode
    for run in todo:
        project.dvc("exp", "run", "--queue", "dvc.yaml", "--name", run["name"],
                    "--set-param", f"roles.train_on=[{','.join(run['combination'])}]",
                    "--set-param", f"train.seed={run['seed']}")
    start_workers(project)
    names = {r["name"] for r in todo}
    with tqdm(total=len(todo), desc="study experiments", unit="exp") as bar:
        while True:  # until every queued run has succeeded or failed
            time.sleep(POLL_SECONDS)
            # success is read from the experiments themselves: once, 12 s after `dvc queue start`, `dvc queue
            # status` listed none of 14 tasks as queued or running; failure from its Status column
            succeeded = names & set(project.finished())
            status = project.dvc("queue", "status")
            rows = [line.split() for line in status.splitlines()[1:]]
            failed = names & {row[1] for row in rows if len(row) > 2 and row[-1] == "Failed"}
            if stalled(status):
                log.warning("study: the DVC queue's workers stopped with runs still queued (a race in DVC's "
                            "filesystem broker between workers, treeverse/dvc#10398); starting them again")
                start_workers(project)
            bar.n = len(succeeded)
            bar.refresh()
            if succeeded | failed == names:
                return failed - succeeded


def failure_logs(project: StudyProject, failed: set[str], tail: int = 2000) -> str:
    """The end of each failed run's `dvc queue logs` (DVC's race leaves some empty)."""
    parts = []
    for name in sorted(failed):
        try:
            text = project.dvc("queue", "logs", name).strip()
        except RuntimeError as error:  # the log itself may be gone with the worker
            text = str(error).strip()
        parts.append(f"--- {name}:\n{text[-tail:] or '(empty log)'}")
    return "\n".join(parts)


def domain_scores(project: StudyProject, metrics_dir: str, rev: str) -> dict[str, dict]:
    """domain -> {dice, aupr_11} of an experiment's score output (the lesion mean when several lesions)."""
    out = {}
    for domain in project.params["roles"]["test_on"]:
        scored = json.loads(project.read(f"{metrics_dir}/domains/{domain}.json", rev))
        out[domain] = summary_scores(scored)
    return out


def run_records(project: StudyProject, revs: dict[str, str]) -> list[dict]:
    """One record per (run, strategy scored inside the run: baseline and each SWA part, domain)."""
    swa = strategy_names(project.params, project.folder)  # the averaged models each run's pipeline scored
    records = []
    for run in tqdm(project.runs(), desc="study: reading experiments", unit="exp"):
        rev = revs[run["name"]]
        rows = read_manifest(project.fetch_manifest(run["name"], rev))
        n_train = sum(r["split"] == "train" for r in rows)
        for strategy, folder in [(BASELINE, "metrics")] + [(s, f"metrics/strategies/{s}") for s in swa]:
            for domain, scored in domain_scores(project, folder, rev).items():
                records.append({"combination": "+".join(run["combination"]), "seed": run["seed"],
                                "strategy": strategy, "domain": domain, "n_train_images": n_train,
                                "zero_shot": is_zero_shot(project.params["roles"]["test_on"][domain]["dataset"],
                                                          run["combination"])} | scored)
    return records


def run_study(project: StudyProject, queue: bool = True) -> None:
    """The whole study: the experiments (those not yet finished), the strategies across seeds, the tables."""
    began = time.monotonic()
    if queue:
        queue_and_run(project)
    revs = project.finished()
    missing = [r["name"] for r in project.runs() if r["name"] not in revs]
    if missing:
        raise InputError(f"study: no finished experiment on this commit for {missing}: run the study without "
                         "--tables-only")
    started = time.monotonic()
    first = revs[project.runs()[0]["name"]]
    preprocessed = project.fetch("data/preprocessed", first, project.work / "preprocessed")
    styles = {d: v["style"] for d, v in json.loads(project.read("metrics/characterisation.json", first)).items()}
    records = run_records(project, revs) + cross_seed_records(project, revs, preprocessed)
    write_tables(records, styles, project.out)
    this_call = project.timing | {"strategies_and_tables_minutes": round((time.monotonic() - started) / 60, 1),
                               "experiments_committed": [min(project.committed[n] for n in revs),
                                                         max(project.committed[n] for n in revs)]}
    whole = {"total_minutes": round((time.monotonic() - began) / 60, 1), "compute": project.params["compute"]}
    previous = json.loads((project.out / "time.json").read_text()) if (project.out / "time.json").is_file() else {}
    timing = study_timing(previous, this_call, whole)
    write_json(project.out / "time.json", timing)


def study_timing(previous: dict, this_call: dict, whole: dict) -> dict:
    """metrics/study/time.json after a call; whole (total_minutes, compute) counts only if the call ran every
    experiment (this_call's experiments_run == of; a --tables-only call queued none and has neither).
    It holds the last call that ran the whole study; a later call that ran less (a resumed study, the tables only)
    keeps that call's figures, so that total_minutes and its parts stay one run's, and adds its own as
    last_partial_call. Without a whole run on record, the partial call's figures are the record."""
    if "of" in this_call and this_call.get("experiments_run") == this_call["of"]:
        return this_call | whole
    if "total_minutes" in previous:
        return previous | {"last_partial_call": this_call}
    return previous | this_call
