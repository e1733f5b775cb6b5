"""Stage patient-split: patient-isolated train/val split of the training datasets, before any patch exists."""
import json
import logging
from collections import Counter
from pathlib import Path

from micropatch import logs
from micropatch.io import load_params
from micropatch.split import assign_splits, read_patient_keys, write_manifest

MANIFEST = "data/splits/manifest.csv"


def main() -> None:
    logs.setup()
    params = load_params("split")
    train_on = load_params("roles")["train_on"]
    lesions = load_params("lesions")
    fingerprints = []
    for path in sorted(Path("data/preprocessed").glob("*/fingerprint.json")):
        for fp in json.loads(path.read_text())["images"]:
            fp["lesion_pixels"] = {k: v for k, v in fp["lesion_pixels"].items() if k in lesions}
            fingerprints.append(fp)
    keys = read_patient_keys(params["patient_keys"]) if params.get("patient_keys") else None
    rows = assign_splits(fingerprints, train_on, params["val_fraction"], params["seed"], keys,
                         params["merge_near_duplicates"])
    write_manifest(MANIFEST, rows)
    logging.info("patient-split: %s", dict(Counter((r["dataset"], r["split"]) for r in rows)))


if __name__ == "__main__":
    main()
