"""The strategies across a combination's seeds: the prediction ensemble, and the model soups (uniform and greedy,
over the encoder, the decoder or the full model), each predicted and scored on the study's test domains as the
score stage scores."""
from __future__ import annotations

import json
import math
import multiprocessing
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from micropatch.core import compute
from micropatch.evaluation.score import lesion_mean, score_domain
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


def summary_scores(scored: dict) -> dict:
    """{dice, ap, aupr_11, degenerate, lesions_scored} of a domain's score JSON: the lesion mean
    (evaluation.lesion_mean) over the
    lesions its test images hold (truth lesions > 0). A lesion absent from a domain's few held-out images has no
    Dice to speak of: any false positive makes it 0, none makes it 1, which would decide a strategy's mean."""
    present = {lesion: s for lesion, s in scored["lesions"].items() if s["lesions"] > 0}
    if not present:
        return {"dice": math.nan, "ap": math.nan, "aupr_11": math.nan, "degenerate": False, "lesions_scored": ""}
    summary = lesion_mean(present)  # of one lesion: that lesion's
    # sorted: the score stage's JSON has sorted keys, a folder scored here has the params' order; one spelling
    return {"dice": summary["dice"], "ap": summary["ap"], "aupr_11": summary["aupr_11"],
            "degenerate": any(s["degenerate"] for s in present.values()), "lesions_scored": "+".join(sorted(present))}


def score_folder(folder: Path, preprocessed: Path, params: dict) -> dict:
    """summary_scores of a folder of maps with its domain.json, scored as the score stage scores
    (evaluation), summarised as summary_scores does."""
    domain = json.loads((folder / "domain.json").read_text())
    by_lesion, _ = score_domain(domain, folder, preprocessed, params, folder / "per_image.csv")
    return summary_scores({"lesions": by_lesion})
