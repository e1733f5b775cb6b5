"""The evaluation phase's pipeline stage (score), given the stage script's parsed arguments: pooled P/R/Dice/IoU,
aupr_11, AP and lesion-level FROC per domain and lesion; metrics files, tables, plots and panels."""
from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path

from micropatch.core import logs
from micropatch.core.fileio import load_params, write_json, write_text
from micropatch.core.provenance import versions
from micropatch.data.manifest import read_manifest
from micropatch.evaluation import figures
from micropatch.evaluation.misses import AREA_BINS, CONTRAST_BINS, domain_misses, panel, recall_by
from micropatch.evaluation.score import (
    cross_domain_rows,
    cross_domain_table,
    is_zero_shot,
    lesion_mean,
    operating_point,
    score_domain,
    write_headlines,
    write_rows,
)


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def score(args: argparse.Namespace) -> None:
    """stages/score.py: pooled P/R/Dice/IoU, aupr_11, AP and lesion-level FROC per domain of `roles.test_on` and lesion.

    Writes one metrics JSON per domain (<out>/domains/), the cross-domain table (markdown and JSON), per-image
    tables, curve data for `dvc plots` and figures.

    args: the stage script's parsed arguments (the paths dvc.yaml names).
    """
    logs.setup()
    params = load_params("score")
    roles = load_params("roles")
    plots = args.out / "plots"
    sources = {(r["dataset"], r["image_id"]): r["source"] for r in read_manifest(args.manifest)}
    results, zero_shot, points = {}, {}, {}
    for name in roles["test_on"]:  # the configured domains only: a stale predictions folder is never scored
        pred_dir = args.predictions / name
        domain = json.loads((pred_dir / "domain.json").read_text())
        results[name], per_image = score_domain(domain, pred_dir, args.preprocessed, params,
                                                args.out / "per_image" / f"{name}.csv")
        zero_shot[name] = is_zero_shot(domain["dataset"], roles["train_on"])
        points[name] = operating_point(domain, params)
        if not params["panels"]:
            continue
        figures.domain_panels(domain, per_image, pred_dir, args.preprocessed,
                              {i: s for (d, i), s in sources.items() if d == domain["dataset"]},
                              points[name], plots / "panels")
    for name, by_lesion in results.items():  # where the misses are, at the operating point
        domain = json.loads((args.predictions / name / "domain.json").read_text())
        for lesion in by_lesion:
            image_ids = sorted({r["image_id"] for r in read_rows(args.out / "per_image" / f"{name}.csv")
                                if r["lesion"] == lesion})
            lesions, false_positives, crops = domain_misses(image_ids, args.preprocessed / domain["dataset"],
                                                            args.predictions / name, lesion,
                                                            operating_point(domain, params, lesion))
            write_rows(args.out / "per_image" / f"{name}_{lesion}_lesions.csv", lesions)
            write_json(plots / "recall_by_area" / f"{name}_{lesion}.json", recall_by(lesions, "area_px", AREA_BINS))
            write_json(plots / "recall_by_contrast" / f"{name}_{lesion}.json",
                       recall_by(lesions, "contrast", CONTRAST_BINS))
            if not params["panels"]:
                continue
            panel(crops, plots / "panels" / f"{name}_{lesion}_missed_vs_false_positive.png",
                  f"{name} {lesion}: largest missed lesions (top) and most confident false positives (bottom); "
                  "truth green, prediction red")
    curves = {}
    for name, by_lesion in results.items():
        for lesion, summary in by_lesion.items():
            curves[name, lesion] = {k: summary.pop(k) for k in ("pr_curve", "pr_11", "froc_curve")}
            write_json(plots / "pr" / f"{name}_{lesion}.json",
                       figures.curve_records(curves[name, lesion]["pr_curve"], ("threshold", "recall", "precision")))
            write_json(plots / "froc" / f"{name}_{lesion}.json",
                       figures.curve_records(curves[name, lesion]["froc_curve"],
                                             ("threshold", "fps_per_image", "sensitivity")))
    figures.curves_figure({d: {lesion: s | curves[d, lesion] for lesion, s in by.items()} for d, by in results.items()},
                          plots / "curves.png")
    with open(args.history, newline="") as f:
        figures.training_figure(list(csv.DictReader(f, delimiter="\t")), plots / "training.png")
    figures.bars_figure(results, plots / "cross_domain.png")
    for name, by_lesion in results.items():
        scored = {"domain": name, "zero_shot": zero_shot[name], "lesions": by_lesion,
                  **({"lesion_mean": lesion_mean(by_lesion)} if len(by_lesion) > 1 else {}),
                  "operating_point": points[name], "seed": params["seed"], "versions": versions()}
        write_json(args.out / "domains" / f"{name}.json", scored)
        write_headlines(scored, args.out / "headline")
    rows = cross_domain_rows(results, zero_shot)
    write_json(args.out / "cross_domain.json", rows)
    write_text(args.out / "cross_domain.md", cross_domain_table(rows))
    logging.info("score:\n%s", cross_domain_table(rows))
