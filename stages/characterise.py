"""Stage characterise: each dataset's labelling style (per-image lesion count and mean lesion area, the study's
figure 2) and image-quality grades (its figure 1, by a transparent measure, not MCF-Net), as metrics and plots."""
import argparse
import csv
import io
import json
import logging
import math
from pathlib import Path

from tqdm import tqdm

from micropatch import logs
from micropatch.characterisation import grade_counts, labelling_style, lesion_statistics, quality_grade, quality_measures
from micropatch.datasets import load_records
from micropatch.fileio import load_params, read_fundus, write_json, write_text

LABELLING_COLUMNS = ("image_id", "lesion", "count", "mean_area_ppm", "log10_count", "log10_mean_area_ppm")  # lesion
# "all": every annotated lesion type of the image together (the style's rule and the scatter), else one type
QUALITY_COLUMNS = ("image_id", "grade", "focus", "brightness", "evenness")


def table(rows: list[dict], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--preprocessed", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the metrics JSON")
    parser.add_argument("--plots", type=Path, required=True, help="folder of one labelling and one quality CSV "
                                                                  "per dataset")
    args = parser.parse_args()
    logs.setup()
    fov_threshold = load_params("preprocess")["fov_threshold"]
    summary = {}
    for dataset in json.loads((args.raw / "datasets.json").read_text()):
        name = dataset["name"]
        fingerprints = json.loads((args.preprocessed / name / "fingerprint.json").read_text())["images"]
        points = [{"image_id": fp["image_id"], "lesion": lesion, "count": s["count"],
                   "mean_area_ppm": s["mean_area_ppm"], "log10_count": round(math.log10(s["count"]), 4),
                   "log10_mean_area_ppm": round(math.log10(max(s["mean_area_ppm"], 1e-3)), 4)}
                  for fp in fingerprints for lesion, s in lesion_statistics(fp).items()]
        records = load_records(dataset["adapter"], dataset["root"], name, **dataset.get("options", {}))
        quality = []
        for record in tqdm(records, desc=f"quality {name}", unit="img"):
            measures = quality_measures(read_fundus(record.image_path), fov_threshold)
            quality.append({"image_id": record.image_id, "grade": quality_grade(measures), **measures})
        write_text(args.plots / f"quality_{name}.csv", table(quality, QUALITY_COLUMNS))
        write_text(args.plots / f"labelling_{name}.csv", table([p for p in points if p["lesion"] == "all"],
                                                                LABELLING_COLUMNS))
        write_text(args.plots / f"lesions_{name}.csv", table([p for p in points if p["lesion"] != "all"],
                                                              LABELLING_COLUMNS))
        summary[name] = labelling_style(fingerprints) | {
            "quality": grade_counts([q["grade"] for q in quality]),
            "lesions": {lesion: {"images": len(rows := [p for p in points if p["lesion"] == lesion]),
                                 "count_median": sorted(p["count"] for p in rows)[len(rows) // 2],
                                 "mean_area_ppm_median": sorted(p["mean_area_ppm"] for p in rows)[len(rows) // 2]}
                        for lesion in sorted({p["lesion"] for p in points})}}
        logging.info("characterise: %s: %s labels (%.0f %% of %d images look coarse); quality %s", name,
                     summary[name]["style"], 100 * summary[name]["coarse_share"], summary[name]["images"],
                     summary[name]["quality"])
    write_json(args.out, summary)


if __name__ == "__main__":
    main()
