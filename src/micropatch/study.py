"""The cross-dataset study (`micropatch study combinations`): one DVC experiment per non-empty combination of the
study's training datasets and seed, queued with `dvc exp run --queue` and run by DVC's queue workers; each is an
ordinary run of the project's dvc.yaml (audit, SWA and scores included). Then, across each combination's seeds,
the prediction ensemble and the model soups (uniform and greedy, over encoder, decoder, full model), scored on the
same held-out test domains; then the study's three tables and figures (its figure 3, table 3 and figure 4).

Every experiment is read back from git and the DVC cache through dvc.api, so the study's numbers come from the
committed experiments, never from a workspace that may have moved on.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .evaluation import DEGENERATE_FOOTNOTE, is_zero_shot
from .fileio import InputError, load_params, write_json, write_text

log = logging.getLogger(__name__)

BASELINE = "baseline"
ENSEMBLE = "ensemble"
STYLES = ("fine", "mixed", "coarse")  # a combination's labelling style: all fine, all coarse, or anything between


def combinations(datasets: list[str]) -> list[tuple[str, ...]]:
    """Every non-empty combination of the training datasets (2^D - 1), by size, then in the given order."""
    return [c for k in range(1, len(datasets) + 1) for c in itertools.combinations(datasets, k)]


def experiment_name(combination: tuple[str, ...], seed: int) -> str:
    """The DVC experiment's name (a git ref name): datasets joined by '+', then the seed."""
    return "+".join(combination) + f"-s{seed}"


def combination_style(combination: tuple[str, ...], styles: dict[str, str]) -> str:
    """fine or coarse when every dataset of it is labelled so (characterisation stage), else mixed."""
    found = {styles.get(d, "mixed") for d in combination}
    return found.pop() if len(found) == 1 and found <= {"fine", "coarse"} else "mixed"


class Study:
    """A study project folder (a params.yaml with a `study` section) inside this git + DVC repository."""

    def __init__(self, project: Path):
        self.project = Path(project).resolve()
        if not (self.project / "params.yaml").is_file():
            raise InputError(f"{self.project}: no params.yaml here; --project names a study project folder (such as "
                             "results/study-combinations), relative to the current directory")
        self.params = load_params(path=self.project / "params.yaml")
        if "study" not in self.params:
            raise InputError(f"{self.project / 'params.yaml'}: no `study` section (datasets, seeds, jobs)")
        self.settings = self.params["study"]
        self.root = Path(self.git("rev-parse", "--show-toplevel").strip())
        self.rel = self.project.relative_to(self.root).as_posix()
        self.work = self.project / "data" / "study"  # ensembles' and soups' maps (ignored; rebuilt from the exps)
        self.out = self.project / "metrics" / "study"
        self.timing = {}  # queue_and_run's measured time, for metrics/study/time.json
        self.committed = {}  # experiment name -> when its commit was made (dvc exp show)
        self.filesystems = {}  # rev -> its DVCFileSystem (filesystem)
        unknown = set(self.settings["datasets"]) - {e["name"] for e in self.params["download"]["datasets"]}
        if unknown:
            raise InputError(f"{self.project / 'params.yaml'}: study.datasets {sorted(unknown)} are not downloaded")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.project, check=True, capture_output=True, text=True).stdout

    def dvc(self, *args: str, env: dict | None = None) -> str:
        dvc = Path(sys.executable).with_name("dvc")
        result = subprocess.run([str(dvc) if dvc.exists() else "dvc", *args], cwd=self.project, text=True,
                                capture_output=True, env=os.environ | (env or {}))
        if result.returncode:
            raise RuntimeError(f"dvc {' '.join(args)} failed in {self.project}:\n{result.stdout}{result.stderr}")
        return result.stdout

    def runs(self) -> list[dict]:
        """Every (combination, seed) of the study, with its experiment name."""
        return [{"combination": c, "seed": s, "name": experiment_name(c, s)}
                for c in combinations(self.settings["datasets"]) for s in self.settings["seeds"]]

    # --- the experiments -------------------------------------------------------------------------------------

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

    def queue_and_run(self) -> None:
        """Queue the runs not yet finished on this commit, start jobs workers, wait for the queue to empty."""
        if self.git("status", "--porcelain", "--untracked-files=no", "--", "."):
            raise InputError(f"{self.project}: commit the study project first: each experiment runs the committed "
                             "code and params (plus the overrides), and the study reads them back from git")
        done = self.finished()
        todo = [r for r in self.runs() if r["name"] not in done]
        log.info("study: %d runs, %d finished on this commit, %d to queue", len(self.runs()), len(done), len(todo))
        started = time.monotonic()  # queueing included: each `dvc exp run --queue` stashes the workspace
        if todo:
            self.dvc("queue", "remove", "--failed")  # an earlier attempt's failures would read as this one's
        # no --force: a stage whose code, params and inputs a finished run already had is restored from DVC's run
        # cache, not rerun (download and preprocess are the same in every run, patchify in every seed of a
        # combination; train never is: its resume state is a persistent output); the outputs are the same bytes in
        # the reproducible compute mode
        for run in todo:
            self.dvc("exp", "run", "--queue", "dvc.yaml", "--name", run["name"],
                     "--set-param", f"roles.train_on=[{','.join(run['combination'])}]",
                     "--set-param", f"train.seed={run['seed']}")
        if not todo:
            return
        # the workers' stages import the experiment's own copy of src/ (a relative path from the project folder of
        # each temporary clone), not the micropatch this command runs (an editable install points at one checkout)
        self.dvc("queue", "start", "--jobs", str(self.settings["jobs"]),
                 env={"PYTHONPATH": os.path.relpath(self.root / "src", self.project)})
        names = {r["name"] for r in todo}
        with tqdm(total=len(todo), desc="study experiments", unit="exp") as bar:
            while True:  # until every queued run has succeeded or failed
                time.sleep(30)
                # success is read from the experiments themselves: once, 12 s after `dvc queue start`, `dvc queue
                # status` listed none of 14 tasks as queued or running; failure from its Status column
                succeeded = names & set(self.finished())
                rows = [line.split() for line in self.dvc("queue", "status").splitlines()[1:]]
                failed = names & {row[1] for row in rows if len(row) > 2 and row[-1] == "Failed"}
                bar.n = len(succeeded)
                bar.refresh()
                if succeeded | failed == names:
                    break
        if failed:
            raise RuntimeError(f"study: {len(failed)} experiments failed: {sorted(failed)}; see `dvc queue logs NAME` "
                               f"in {self.project}, fix, and run the study again (finished ones are kept)")
        minutes = (time.monotonic() - started) / 60
        log.info("study: %d experiments in %.1f min with %d workers", len(todo), minutes, self.settings["jobs"])
        self.timing = {"experiments_run": len(todo), "of": len(self.runs()), "workers": self.settings["jobs"],
                       "experiments_minutes": round(minutes, 1), "cpu_cores": os.cpu_count()}

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

    # --- reading the runs back, and the strategies across seeds ----------------------------------------------

    def domain_scores(self, metrics_dir: str, rev: str) -> dict[str, dict]:
        """domain -> {dice, aupr_11} of an experiment's score output (the lesion mean when several lesions)."""
        out = {}
        for domain in self.params["roles"]["test_on"]:
            scored = json.loads(self.read(f"{metrics_dir}/domains/{domain}.json", rev))
            out[domain] = summary_scores(scored)
        return out

    def run_records(self, revs: dict[str, str]) -> list[dict]:
        """One record per (run, strategy scored inside the run: baseline and each SWA part, domain)."""
        from .pipeline import strategy_names
        from .split import read_manifest

        swa = strategy_names(self.params, self.project)  # the averaged models each run's pipeline scored
        records = []
        for run in tqdm(self.runs(), desc="study: reading experiments", unit="exp"):
            rev = revs[run["name"]]
            rows = read_manifest(self.fetch_manifest(run["name"], rev))
            n_train = sum(r["split"] == "train" for r in rows)
            for strategy, folder in [(BASELINE, "metrics")] + [(s, f"metrics/strategies/{s}") for s in swa]:
                for domain, scored in self.domain_scores(folder, rev).items():
                    records.append({"combination": "+".join(run["combination"]), "seed": run["seed"],
                                    "strategy": strategy, "domain": domain, "n_train_images": n_train,
                                    "zero_shot": is_zero_shot(self.params["roles"]["test_on"][domain]["dataset"],
                                                              run["combination"])} | scored)
        return records

    def cross_seed_records(self, revs: dict[str, str], preprocessed: Path) -> list[dict]:
        """Ensemble and soups (uniform and greedy, per part) of each combination's seeds, scored per domain."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        by_combination = defaultdict(list)
        for run in self.runs():
            by_combination[run["combination"]].append(run)
        jobs = [(self.project, combination, runs, revs, preprocessed) for combination, runs in by_combination.items()]
        # as many processes as the queue had workers, each in the project's compute mode (spawned: torch fresh)
        with ProcessPoolExecutor(self.settings["jobs"], mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(combination_worker, job) for job in jobs]
            # the bar moves as each combination ends, in any order (pool.map's results wait for the first)
            for _ in tqdm(as_completed(futures), total=len(jobs), desc="study: ensembles and soups",
                          unit="combination"):
                pass
        return [record for future in futures for record in future.result()]

    def combination_strategies(self, combination, runs, revs, preprocessed: Path) -> list[dict]:
        from .averaging import PARTS, averaged_model, bn_batches, ensemble_maps, greedy_soup
        from .fileio import read_png, write_png

        name = "+".join(combination)
        work = self.work / name
        domains = self.params["roles"]["test_on"]
        maps = {r["name"]: {d: self.fetch(f"data/predictions/{d}", revs[r["name"]], work / "maps" / r["name"] / d)
                            for d in domains} for r in runs}
        models = {r["name"]: self.fetch("data/model/release.safetensors", revs[r["name"]],
                                        work / "models" / f"{r['name']}.safetensors") for r in runs}
        # a model's own held-out score, the greedy soup's order: its best selection score in training (val)
        own = {r["name"]: json.loads(self.read("metrics/train.json", revs[r["name"]]))["best_select_score"]
               for r in runs}
        ranked = sorted(own, key=lambda n: (-own[n], n))
        first = revs[ranked[0]]
        patches = self.fetch("data/patches", first, work / "patches")
        manifest = self.fetch_manifest(ranked[0], first)
        from .split import read_manifest

        meta = {"combination": name, "seed": "all", "n_models": len(runs),
                "n_train_images": sum(r["split"] == "train" for r in read_manifest(manifest))}

        def scored(strategy: str, folder: Path) -> list[dict]:
            return [meta | {"strategy": strategy, "domain": d,
                            "zero_shot": is_zero_shot(domains[d]["dataset"], combination)}
                    | score_folder(folder / d, preprocessed, self.params["score"]) for d in domains]

        records = []
        ensemble_dir = work / ENSEMBLE
        for d in domains:
            domain = json.loads((maps[ranked[0]][d] / "domain.json").read_text())
            for image_id in domain["image_ids"]:
                for lesion in domain["lesions"]:
                    stem = f"{image_id}_{lesion}.png"
                    write_png(ensemble_dir / d / stem, ensemble_maps([read_png(maps[n][d] / stem) for n in ranked]))
            write_json(ensemble_dir / d / "domain.json", domain | {"ensemble": ranked})
        records += scored(ENSEMBLE, ensemble_dir)

        images = np.load(patches / "train" / "images.npy", mmap_mode="r")
        batches = lambda: bn_batches(images, self.params["train"]["batch_size"],  # noqa: E731
                                     self.params["strategies"]["bn_patches"], self.params["train"]["seed"])
        import torch
        from torch.utils.data import DataLoader

        from .training import TrainConfig, evaluate_patches, make_loss, open_patch_set

        cfg = TrainConfig(**self.params["train"])
        val = DataLoader(open_patch_set(patches / "val", train=False, seed=cfg.seed), batch_size=2 * cfg.batch_size)
        loss = make_loss(len(self.params["lesions"]), cfg)
        # each soup (part, ingredients) is averaged, and its BatchNorm recomputed, once: the greedy soup's candidates
        # are often the uniform soup (always, with 2 seeds), scored on val and predicted from the same model
        averaged, soups, val_scores = {}, {}, {}  # (part, ingredients) -> (model, config); its maps; its val score

        def soup(part: str, kept: tuple[str, ...]):
            if (part, kept) not in averaged:
                averaged[part, kept] = averaged_model([models[n] for n in kept], part, models[kept[0]], batches)
            return averaged[part, kept]

        def soup_maps(part: str, kept: tuple[str, ...]) -> Path:
            if len(kept) == 1:  # a soup of one model is that model: nothing averaged, nothing to recompute
                return work / "maps" / kept[0]
            if (part, kept) not in soups:
                folder = work / f"soup_{part}_{len(soups)}"
                self.predict(*soup(part, kept), folder, maps[kept[0]], preprocessed, manifest)
                soups[part, kept] = folder
            return soups[part, kept]

        def val_score(part: str, kept: tuple[str, ...]) -> float:
            if len(kept) == 1:
                return own[kept[0]]
            if (part, kept) not in val_scores:
                val_scores[part, kept] = evaluate_patches(soup(part, kept)[0], val, loss,
                                                          torch.device("cpu"))[cfg.select_on]
                if kept != tuple(ranked):  # memory: only the uniform soup's model is sure to be predicted later
                    averaged.pop((part, kept))
            return val_scores[part, kept]

        for part in PARTS:
            # val first: prediction turns a model's weights channels-last, and val scores its weights as averaged
            kept, _ = greedy_soup(ranked, lambda kept: val_score(part, tuple(kept)))
            records += scored(f"soup_{part}", soup_maps(part, tuple(ranked)))
            records += [r | {"ingredients": len(kept)} for r in scored(f"greedy_soup_{part}",
                                                                       soup_maps(part, tuple(kept)))]
            averaged.clear()  # this part's maps are written
        return records

    @staticmethod
    def predict(model, config: dict, folder: Path, like: dict[str, Path], preprocessed: Path, manifest: Path) -> None:
        """Maps of a model for the study's domains: the images and inference settings of the maps in `like`."""
        from .inference import write_domain_maps
        from .split import read_manifest

        rows = {(r["dataset"], r["image_id"]): r for r in read_manifest(manifest)}
        for d, reference in like.items():
            domain = json.loads((reference / "domain.json").read_text())
            spec = {k: domain[k] for k in ("dataset", "split", "official_split") if k in domain}
            write_domain_maps(model, config, d, spec, [rows[domain["dataset"], i] for i in domain["image_ids"]],
                              preprocessed, domain["inference"], folder / d)

    def run(self, queue: bool = True) -> None:
        """The whole study: the experiments (those not yet finished), the strategies across seeds, the tables."""
        began = time.monotonic()
        if queue:
            self.queue_and_run()
        revs = self.finished()
        missing = [r["name"] for r in self.runs() if r["name"] not in revs]
        if missing:
            raise InputError(f"study: no finished experiment on this commit for {missing}: run the study without "
                             "--tables-only")
        started = time.monotonic()
        first = revs[self.runs()[0]["name"]]
        preprocessed = self.fetch("data/preprocessed", first, self.work / "preprocessed")
        styles = {d: v["style"] for d, v in json.loads(self.read("metrics/characterisation.json", first)).items()}
        records = self.run_records(revs) + self.cross_seed_records(revs, preprocessed)
        write_tables(records, styles, self.out)
        this_call = self.timing | {"strategies_and_tables_minutes": round((time.monotonic() - started) / 60, 1),
                                   "experiments_committed": [min(self.committed[n] for n in revs),
                                                             max(self.committed[n] for n in revs)]}
        whole = {"total_minutes": round((time.monotonic() - began) / 60, 1), "compute": self.params["compute"]}
        previous = json.loads((self.out / "time.json").read_text()) if (self.out / "time.json").is_file() else {}
        timing = study_timing(previous, this_call, whole)
        write_json(self.out / "time.json", timing)


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


def combination_worker(job: tuple) -> list[dict]:
    """Study.combination_strategies in a fresh process: the compute mode first, before torch is imported."""
    from . import compute

    project, combination, runs, revs, preprocessed = job
    study = Study(project)
    compute.configure(**study.params["compute"])
    return study.combination_strategies(combination, runs, revs, preprocessed)


def summary_scores(scored: dict) -> dict:
    """{dice, ap, aupr_11, degenerate, lesions_scored} of a domain's score JSON: the lesion mean
    (evaluation.lesion_mean) over the
    lesions its test images hold (truth lesions > 0). A lesion absent from a domain's few held-out images has no
    Dice to speak of: any false positive makes it 0, none makes it 1, which would decide a strategy's mean."""
    from .evaluation import lesion_mean

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
    from .evaluation import score_domain

    domain = json.loads((folder / "domain.json").read_text())
    by_lesion, _ = score_domain(domain, folder, preprocessed, params, folder / "per_image.csv")
    return summary_scores({"lesions": by_lesion})


# --- the study's tables and figures ----------------------------------------------------------------------------

def seed_means(records: list[dict]) -> list[dict]:
    """One record per (strategy, combination, domain): Dice, AP and aupr_11 averaged over seeds, Dice's range, and
    whether any seed's map was degenerate (metrics.is_degenerate)."""
    groups = defaultdict(list)
    for r in records:
        groups[r["strategy"], r["combination"], r["domain"]].append(r)
    out = []
    for (strategy, combination, domain), group in groups.items():
        dice = [g["dice"] for g in group]
        out.append({k: group[0][k] for k in ("strategy", "combination", "domain", "zero_shot", "n_train_images")}
                   | {"dice": float(np.mean(dice)), "dice_min": float(min(dice)), "dice_max": float(max(dice)),
                      "ap": float(np.mean([g["ap"] for g in group])),
                      "aupr_11": float(np.mean([g["aupr_11"] for g in group])),
                      "degenerate": any(g["degenerate"] for g in group), "n": len(group)})
    return out


def strategy_table(means: list[dict]) -> dict[str, dict]:
    """Figure 4: per strategy, the mean Dice, AP and aupr_11 over every (combination, test domain) pair the
    combination did not train on (the leave-one-out pairs), and over all pairs; the change against the baseline;
    how many leave-one-out pairs are degenerate maps (their aupr_11 reads the challenge's convention)."""
    table = {}
    for strategy in dict.fromkeys(m["strategy"] for m in means):
        mine = [m for m in means if m["strategy"] == strategy]
        zero = [m for m in mine if m["zero_shot"]]
        table[strategy] = {"dice_leave_one_out": mean_of(zero, "dice"), "ap_leave_one_out": mean_of(zero, "ap"),
                           "aupr_11_leave_one_out": mean_of(zero, "aupr_11"), "dice_all": mean_of(mine, "dice"),
                           "ap_all": mean_of(mine, "ap"), "pairs_leave_one_out": len(zero), "pairs_all": len(mine),
                           "degenerate_leave_one_out": sum(bool(m["degenerate"]) for m in zero)}
    base = table.get(BASELINE, {}).get("dice_leave_one_out", math.nan)
    for row in table.values():
        row["dice_change_leave_one_out"] = row["dice_leave_one_out"] - base
    return table


def mean_of(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows])) if rows else math.nan


def leave_one_out_table(means: list[dict], styles: dict[str, str]) -> list[dict]:
    """Table 3: per test domain, the baseline's Dice trained on its own dataset (in-domain: combinations holding
    it) and zero-shot by the labelling style of the combination (fine, mixed, coarse): mean and best."""
    rows = []
    for domain in dict.fromkeys(m["domain"] for m in means):
        mine = [m for m in means if m["strategy"] == BASELINE and m["domain"] == domain]
        groups = [("in-domain", [m for m in mine if not m["zero_shot"]])]
        groups += [(f"zero-shot {style}", [m for m in mine if m["zero_shot"]
                                           and combination_style(tuple(m["combination"].split("+")), styles) == style])
                   for style in STYLES]
        for scenario, group in groups:
            if not group:
                continue
            best = max(group, key=lambda m: m["dice"]) if group else None
            rows.append({"domain": domain, "scenario": scenario, "combinations": len(group),
                         "dice_mean": mean_of(group, "dice"), "ap_mean": mean_of(group, "ap"),
                         "degenerate": sum(bool(m["degenerate"]) for m in group),
                         "best_combination": best["combination"] if best else "", "best_dice": best["dice"] if best
                         else math.nan})
    return rows


def percent(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}"


def write_tables(records: list[dict], styles: dict[str, str], out: Path) -> None:
    """records.csv (every score), combinations.{csv,png} (figure 3), leave_one_out.{md,json} (table 3),
    strategies.{md,json,png} (figure 4) under out."""
    import csv
    import io

    means = seed_means(records)
    buf = io.StringIO()
    fields = sorted({k for r in records for k in r})
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(records, key=lambda r: (r["strategy"], r["combination"], str(r["seed"]), r["domain"])))
    write_text(out / "records.csv", buf.getvalue())

    figure3 = sorted((m | {"style": combination_style(tuple(m["combination"].split("+")), styles)}
                      for m in means if m["strategy"] == BASELINE),
                     key=lambda m: (m["domain"], m["n_train_images"], m["combination"]))
    buf = io.StringIO()
    keys = ["domain", "combination", "style", "n_train_images", "zero_shot", "dice", "dice_min", "dice_max", "n"]
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(figure3)
    write_text(out / "combinations.csv", buf.getvalue())

    table3 = leave_one_out_table(means, styles)
    write_json(out / "leave_one_out.json", table3)
    lines = ["| test domain | scenario | combinations | mean Dice % | mean AP | best combination | its Dice % |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['domain']} | {r['scenario']} | {r['combinations']} | {percent(r['dice_mean'])} | "
              f"{r['ap_mean']:.4f}{'*' if r['degenerate'] else ''} | {r['best_combination'] or '-'} | "
              f"{percent(r['best_dice'])} |" for r in table3]
    write_text(out / "leave_one_out.md", "\n".join(lines) + "\n"
               + (DEGENERATE_FOOTNOTE if any(r["degenerate"] for r in table3) else ""))

    table4 = strategy_table(means)
    write_json(out / "strategies.json", table4)
    lines = ["| strategy | mean Dice %, leave-one-out | change vs baseline (points) | mean AP, leave-one-out | "
             "mean aupr_11, leave-one-out | mean Dice %, all pairs |", "|---|---|---|---|---|---|"]
    lines += [f"| {s} | {percent(r['dice_leave_one_out'])} | {100 * r['dice_change_leave_one_out']:+.1f} | "
              f"{r['ap_leave_one_out']:.4f} | {r['aupr_11_leave_one_out']:.4f}"
              f"{'*' if r['degenerate_leave_one_out'] else ''} | {percent(r['dice_all'])} |" for s, r in table4.items()]
    write_text(out / "strategies.md", "\n".join(lines) + "\n"
               + (DEGENERATE_FOOTNOTE if any(r["degenerate_leave_one_out"] for r in table4.values()) else ""))
    study_figures(figure3, table4, out / "combinations.png", out / "strategies.png")


STYLE_COLOURS = {"fine": "#dbe9f6", "mixed": "#eeeeee", "coarse": "#fbe3d6"}


def study_figures(figure3: list[dict], table4: dict[str, dict], combinations_png: Path, strategies_png: Path) -> None:
    """The study's figure 3 (per test domain, the baseline's Dice of every combination, ordered by training images,
    seeds' range as error bars, background the combination's labelling style) and figure 4 (mean leave-one-out
    Dice per strategy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures import _save

    domains = list(dict.fromkeys(m["domain"] for m in figure3))
    fig, axes = plt.subplots(1, len(domains), figsize=(4.2 * len(domains), 4), squeeze=False)
    for ax, domain in zip(axes[0], domains):
        rows = [m for m in figure3 if m["domain"] == domain]
        x = np.arange(len(rows))
        for i, m in enumerate(rows):
            ax.axvspan(i - 0.5, i + 0.5, color=STYLE_COLOURS[m["style"]], zorder=0)
        dice = np.array([m["dice"] for m in rows]) * 100
        spread = np.array([[m["dice"] - m["dice_min"], m["dice_max"] - m["dice"]] for m in rows]).T * 100
        ax.bar(x, dice, 0.6, yerr=spread, capsize=3, color=["0.6" if m["zero_shot"] else "C0" for m in rows])
        ax.set(xticks=x, xlim=(-0.5, len(rows) - 0.5), ylabel="Dice % (lesion mean)", title=f"test: {domain}")
        ax.set_xticklabels([f"{m['combination']}\n({m['n_train_images']})" for m in rows], rotation=60, fontsize=7,
                           ha="right")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("C0", "0.6", *STYLE_COLOURS.values())]
    labels = ["trained on the test dataset", "zero-shot"] + [f"background: {s} labels" for s in STYLE_COLOURS]
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=5, fontsize=8)
    _save(fig, combinations_png)

    names = list(table4)
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(5, 0.9 * len(names)), 3.8))
    for ax, key, label, fmt in ((axes[0], "dice_leave_one_out", "mean Dice % over leave-one-out pairs", "%.1f"),
                                (axes[1], "ap_leave_one_out", "mean AP over leave-one-out pairs", "%.3f")):
        scale = 100 if key.startswith("dice") else 1
        bars = ax.bar(np.arange(len(names)), [scale * table4[n][key] for n in names],
                      color=["C0" if n == BASELINE else "C1" for n in names])
        ax.bar_label(bars, fmt=fmt, fontsize=7)
        ax.set(xticks=np.arange(len(names)), ylabel=label)
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    fig.suptitle("Strategies: mean zero-shot Dice and AP over every combination and test domain it excludes")
    _save(fig, strategies_png)
