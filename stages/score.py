"""Stage score: pooled P/R/Dice/IoU, aupr_11, AP and lesion-level FROC per domain and lesion.

Writes one metrics JSON per domain (metrics/domains/), the cross-domain table (markdown and JSON), per-image
tables, curve data for `dvc plots` and figures.
"""
import csv
import json
import logging
from pathlib import Path

from micropatch import figures, logs
from micropatch.evaluation import cross_domain_rows, cross_domain_table, score_domain
from micropatch.io import load_params, read_fundus, read_png, write_json, write_text
from micropatch.split import read_manifest
from micropatch.provenance import versions

METRICS = Path("metrics")
PLOTS = METRICS / "plots"


def write_figures(results: dict, curves: dict, params: dict) -> None:
    """Curve data for `dvc plots` (one JSON per domain and lesion) and PNG figures, panels included."""
    for (domain, lesion), c in curves.items():
        write_json(PLOTS / "pr" / f"{domain}_{lesion}.json",
                   figures.curve_records(c["pr_curve"], ("threshold", "recall", "precision")))
        write_json(PLOTS / "froc" / f"{domain}_{lesion}.json",
                   figures.curve_records(c["froc_curve"], ("threshold", "fps_per_image", "sensitivity")))
    with_curves = {d: {l: s | curves[d, l] for l, s in by.items()} for d, by in results.items()}
    figures.curves_figure(with_curves, PLOTS / "curves.png")
    with open(METRICS / "train_history.tsv", newline="") as f:
        figures.training_figure(list(csv.DictReader(f, delimiter="\t")), PLOTS / "training.png")
    figures.bars_figure(results, PLOTS / "cross_domain.png")
    manifest = {(r["dataset"], r["image_id"]): r for r in read_manifest("data/splits/manifest.csv")}
    for domain_file in sorted(Path("data/predictions").glob("*/domain.json")):
        domain = json.loads(domain_file.read_text())
        with open(METRICS / "per_image" / f"{domain['domain']}.csv", newline="") as f:
            per_image = list(csv.DictReader(f))
        for lesion in domain["lesions"]:
            for rank, row in figures.best_median_worst(per_image, lesion).items():
                image_id = row["image_id"]
                probability = read_png(domain_file.parent / f"{image_id}_{lesion}.png") / 255.0
                truth = read_png(Path("data/preprocessed") / domain["dataset"] / f"{image_id}_{lesion}.png") > 0
                rgb = read_fundus(manifest[domain["dataset"], image_id]["source"])
                figures.panel_figure(f"{domain['domain']} {lesion} {rank} by Dice: {image_id} "
                                     f"(Dice {float(row['dice']):.3f})", rgb, probability, truth,
                                     params["threshold"], PLOTS / "panels" / f"{domain['domain']}_{lesion}_{rank}.png")


def main() -> None:
    logs.setup()
    params = load_params("score")
    train_on = load_params("roles")["train_on"]
    results, zero_shot = {}, {}
    for domain_file in sorted(Path("data/predictions").glob("*/domain.json")):
        domain = json.loads(domain_file.read_text())
        results[domain["domain"]] = score_domain(domain, domain_file.parent, Path("data/preprocessed"),
                                                 params, METRICS / "per_image" / f"{domain['domain']}.csv")
        zero_shot[domain["domain"]] = domain["dataset"] not in train_on
    curves = {}
    for domain, by_lesion in results.items():
        for lesion, summary in by_lesion.items():
            curves[domain, lesion] = {k: summary.pop(k) for k in ("pr_curve", "pr_11", "froc_curve")}
    write_figures(results, curves, params)
    for domain, by_lesion in results.items():
        write_json(METRICS / "domains" / f"{domain}.json", {
            "domain": domain, "zero_shot": zero_shot[domain], "lesions": by_lesion, "threshold": params["threshold"],
            "seed": params["seed"], "versions": versions()})
    rows = cross_domain_rows(results, zero_shot)
    write_json(METRICS / "cross_domain.json", rows)
    write_text(METRICS / "cross_domain.md", cross_domain_table(rows))
    logging.info("score:\n%s", cross_domain_table(rows))


if __name__ == "__main__":
    main()
