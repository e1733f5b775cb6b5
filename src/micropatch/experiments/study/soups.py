"""One combination's strategies across its seeds, in a worker process whose compute mode is pinned: the prediction
ensemble, and the uniform and greedy model soups over each part (encoder, decoder, full model), each averaged and
its BatchNorm recomputed once, predicted on the study's test domains and scored as the score stage scores."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from micropatch.core.fileio import read_png, write_json, write_png
from micropatch.data.manifest import read_manifest
from micropatch.evaluation.score import is_zero_shot
from micropatch.experiments.study.project import ENSEMBLE, StudyProject
from micropatch.experiments.study.scores import score_folder
from micropatch.inference.maps import write_domain_maps
from micropatch.training.averaging import PARTS, averaged_model, bn_batches, ensemble_maps, greedy_soup
from micropatch.training.config import TrainConfig
from micropatch.training.dataset import open_patch_set
from micropatch.training.loss import make_loss
from micropatch.training.network import save_checkpoint
from micropatch.training.selection import evaluate_patches


@dataclass
class Combination:
    """One combination's seeds, fetched out of their experiments: maps, released models, their own held-out score
    (the greedy soup's order: the best selection score in training), the first one's patches and manifest."""

    project: StudyProject
    combination: tuple[str, ...]
    preprocessed: Path
    maps: dict[str, dict[str, Path]]
    models: dict[str, Path]
    own: dict[str, float]
    patches: Path
    manifest: Path

    @property
    def work(self) -> Path:
        return self.project.work / "+".join(self.combination)

    @property
    def ranked(self) -> list[str]:
        return sorted(self.own, key=lambda n: (-self.own[n], n))

    def scored(self, strategy: str, folder: Path) -> list[dict]:
        """One record per test domain of the maps in folder."""
        domains = self.project.params["roles"]["test_on"]
        meta = {"combination": "+".join(self.combination), "seed": "all", "n_models": len(self.models),
                "n_train_images": sum(r["split"] == "train" for r in read_manifest(self.manifest))}
        return [meta | {"strategy": strategy, "domain": d, "zero_shot": is_zero_shot(domains[d]["dataset"],
                                                                                    self.combination)}
                | score_folder(folder / d, self.preprocessed, self.project.params["score"]) for d in domains]


def fetch_combination(project: StudyProject, combination: tuple[str, ...], runs: list[dict], revs: dict[str, str],
                      preprocessed: Path) -> Combination:
    """A combination's seeds' outputs, copied out of the DVC cache under the study's work folder."""
    work = project.work / "+".join(combination)
    domains = project.params["roles"]["test_on"]
    maps = {r["name"]: {d: project.fetch(f"data/predictions/{d}", revs[r["name"]], work / "maps" / r["name"] / d)
                        for d in domains} for r in runs}
    models = {r["name"]: project.fetch("data/model/release.safetensors", revs[r["name"]],
                                       work / "models" / f"{r['name']}.safetensors") for r in runs}
    own = {r["name"]: json.loads(project.read("metrics/train.json", revs[r["name"]]))["best_select_score"]
           for r in runs}
    first = min(own, key=lambda n: (-own[n], n))
    return Combination(project, combination, preprocessed, maps, models, own,
                       project.fetch("data/patches", revs[first], work / "patches"),
                       project.fetch_manifest(first, revs[first]))


def ensemble_records(combo: Combination) -> list[dict]:
    """The prediction ensemble: each map the mean probability of the seeds' maps."""
    folder = combo.work / ENSEMBLE
    for d, reference in combo.maps[combo.ranked[0]].items():
        domain = json.loads((reference / "domain.json").read_text())
        for image_id in domain["image_ids"]:
            for lesion in domain["lesions"]:
                stem = f"{image_id}_{lesion}.png"
                write_png(folder / d / stem, ensemble_maps([read_png(combo.maps[n][d] / stem) for n in combo.ranked]))
        write_json(folder / d / "domain.json", domain | {"ensemble": combo.ranked})
    return combo.scored(ENSEMBLE, folder)


@dataclass
class Soups:
    """Each soup (part, ingredients) averaged, and its BatchNorm recomputed, once: the greedy soup's candidates are
    often the uniform soup (always, with 2 seeds), scored on val and predicted from the same model."""

    combo: Combination
    averaged: dict = field(default_factory=dict)  # (part, ingredients) -> (model, config)
    folders: dict = field(default_factory=dict)  # (part, ingredients) -> its maps' folder
    val_scores: dict = field(default_factory=dict)  # (part, ingredients) -> its val score

    def __post_init__(self):
        params = self.combo.project.params
        self.cfg = TrainConfig(**params["train"])
        self.val = DataLoader(open_patch_set(self.combo.patches / "val", train=False, seed=self.cfg.seed),
                              batch_size=2 * self.cfg.batch_size)
        self.loss = make_loss(len(params["lesions"]), self.cfg)
        images = np.load(self.combo.patches / "train" / "images.npy", mmap_mode="r")
        self.batches = lambda: bn_batches(images, params["train"]["batch_size"], params["strategies"]["bn_patches"],
                                          params["train"]["seed"])

    def model(self, part: str, kept: tuple[str, ...]):
        if (part, kept) not in self.averaged:
            paths = [self.combo.models[n] for n in kept]
            self.averaged[part, kept] = averaged_model(paths, part, paths[0], self.batches)
        return self.averaged[part, kept]

    def maps(self, part: str, kept: tuple[str, ...]) -> Path:
        if len(kept) == 1:  # a soup of one model is that model: nothing averaged, nothing to recompute
            return self.combo.work / "maps" / kept[0]
        if (part, kept) not in self.folders:
            folder = self.combo.work / f"soup_{part}_{len(self.folders)}"
            model, config = self.model(part, kept)
            predict_maps(model, config, folder, self.combo.maps[kept[0]], self.combo.preprocessed, self.combo.manifest)
            # kept beside its maps, with its ingredients named: what was averaged can be checked
            save_checkpoint(folder / "model.safetensors", model,
                            config | {"soup": {"part": part, "ingredients": list(kept)}})
            self.folders[part, kept] = folder
        return self.folders[part, kept]

    def val_score(self, part: str, kept: tuple[str, ...]) -> float:
        if len(kept) == 1:
            return self.combo.own[kept[0]]
        if (part, kept) not in self.val_scores:
            scores = evaluate_patches(self.model(part, kept)[0], self.val, self.loss, torch.device("cpu"))
            self.val_scores[part, kept] = scores[self.cfg.select_on]
            if kept != tuple(self.combo.ranked):  # memory: only the uniform soup is sure to be predicted later
                self.averaged.pop((part, kept))
        return self.val_scores[part, kept]

    def records(self, part: str) -> list[dict]:
        """The uniform and the greedy soup of one part, scored."""
        ranked = self.combo.ranked
        # val first: prediction turns a model's weights channels-last, and val scores its weights as averaged
        kept, _ = greedy_soup(ranked, lambda kept: self.val_score(part, tuple(kept)))
        out = self.combo.scored(f"soup_{part}", self.maps(part, tuple(ranked)))
        out += [r | {"ingredients": len(kept)} for r in self.combo.scored(f"greedy_soup_{part}",
                                                                          self.maps(part, tuple(kept)))]
        self.averaged.clear()  # this part's maps are written
        return out


def combination_strategies(project: StudyProject, combination: tuple[str, ...], runs: list[dict],
                           revs: dict[str, str], preprocessed: Path) -> list[dict]:
    """The ensemble's and every soup's records of one combination."""
    combo = fetch_combination(project, combination, runs, revs, preprocessed)
    soups = Soups(combo)
    return ensemble_records(combo) + [r for part in PARTS for r in soups.records(part)]


def predict_maps(model, config: dict, folder: Path, like: dict[str, Path], preprocessed: Path, manifest: Path) -> None:
    """Maps of a model for the study's domains: the images and inference settings of the maps in `like`."""
    rows = {(r["dataset"], r["image_id"]): r for r in read_manifest(manifest)}
    for d, reference in like.items():
        domain = json.loads((reference / "domain.json").read_text())
        spec = {k: domain[k] for k in ("dataset", "split", "official_split") if k in domain}
        write_domain_maps(model, config, d, spec, [rows[domain["dataset"], i] for i in domain["image_ids"]],
                          preprocessed, domain["inference"], folder / d)
