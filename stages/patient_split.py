"""Stage patient-split: patient-isolated train/val split of the training datasets, before any patch exists."""
import argparse
import json
import logging
from collections import Counter
from pathlib import Path

from micropatch import logs
from micropatch.fileio import InputError, load_params
from micropatch.split import HELD_OUT, assign_splits, domain_rows, read_patient_keys, write_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preprocessed", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logs.setup()
    params = load_params()
    lesions, split = params["lesions"], params["split"]
    fingerprints = []
    for path in sorted(args.preprocessed.glob("*/fingerprint.json")):
        for fp in json.loads(path.read_text())["images"]:
            fp["lesion_pixels"] = {k: v for k, v in fp["lesion_pixels"].items() if k in lesions}
            fingerprints.append(fp)
    keys = read_patient_keys(split["patient_keys"]) if split.get("patient_keys") else None
    rows = assign_splits(fingerprints, params["roles"]["train_on"], split["val_fraction"], split["seed"], keys,
                         split["merge_near_duplicates"], params["audit"]["phash_threshold"],
                         split["tune_fraction"], split["test_fraction"])
    for domain, spec in params["roles"]["test_on"].items():  # every test domain has images: refused here, before
        try:                                                  # any patch or training, not by infer hours later
            domain_rows(rows, domain, spec)
        except InputError as err:
            hint = (f"; split.test_fraction {split['test_fraction']} holds out no patient of {spec['dataset']}: "
                    "raise it" if spec.get("split") == HELD_OUT else "")
            raise InputError(f"{err}{hint}") from None
    write_manifest(args.out, rows)
    logging.info("patient-split: %s", dict(Counter((r["dataset"], r["split"]) for r in rows)))


if __name__ == "__main__":
    main()
