"""The strategies across a combination's seeds: the prediction ensemble, and the model soups (uniform and greedy,
over the encoder, the decoder or the full model), each predicted and scored on the study's test domains as the
score stage scores."""
from __future__ import annotations

import multiprocessing
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from micropatch.core import compute
from micropatch.experiments.study.project import StudyProject


def cross_seed_records(project: StudyProject, revs: dict[str, str], preprocessed: Path) -> list[dict]:
    """Ensemble and soups (uniform and greedy, per part) of each combination's seeds, scored per domain."""
    by_combination = defaultdict(list)
    for run in project.runs():
        by_combination[run["combination"]].append(run)
    jobs = [(project.folder, combination, runs, revs, preprocessed) for combination, runs in by_combination.items()]
    # as many processes as the queue had workers, each in the project's compute mode (spawned: torch fresh)
    with ProcessPoolExecutor(project.settings["jobs"], mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(combination_worker, job) for job in jobs]
        # the bar moves as each combination ends, in any order (pool.map's results wait for the first)
        for _ in tqdm(as_completed(futures), total=len(jobs), desc="study: ensembles and soups",
                      unit="combination"):
            pass
    return [record for future in futures for record in future.result()]


def combination_worker(job: tuple) -> list[dict]:
    """combination_strategies in a fresh process: the compute mode first, before torch is imported."""
    folder, combination, runs, revs, preprocessed = job
    project = StudyProject(folder)
    compute.configure(**project.params["compute"])
    from micropatch.experiments.study.soups import combination_strategies  # torch: after the compute mode

    return combination_strategies(project, combination, runs, revs, preprocessed)
