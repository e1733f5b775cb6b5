"""Stage preprocess: green channel + CLAHE, FOV mask and binary lesion masks per image; a fingerprint per dataset."""
import argparse
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from tqdm import tqdm

from micropatch import logs
from micropatch.datasets import LESIONS, load_records
from micropatch.fileio import load_params, write_json
from micropatch.preprocessing import dataset_summary, preprocess_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--summary", type=Path, required=True)
    args = parser.parse_args()
    logs.setup()
    params = load_params("preprocess")
    summaries = {}
    for dataset in json.loads((args.raw / "datasets.json").read_text()):
        records = load_records(dataset["adapter"], dataset["root"], dataset["name"], **dataset.get("options", {}))
        work = partial(preprocess_record, out_dir=args.out / dataset["name"], lesions=list(LESIONS),
                       clip_limit=params["clahe_clip_limit"], grid=params["clahe_grid"],
                       fov_threshold=params["fov_threshold"])
        with ProcessPoolExecutor(params["workers"]) as pool:
            fingerprints = list(tqdm(pool.map(work, records), total=len(records), desc=dataset["name"], unit="img"))
        write_json(args.out / dataset["name"] / "fingerprint.json", {
            "dataset": dataset["name"], "adapter": dataset["adapter"], "images": fingerprints})
        summaries[dataset["name"]] = dataset_summary(fingerprints)
        logging.info("preprocess: %s: %d images, median %s", dataset["name"], len(fingerprints),
                     summaries[dataset["name"]]["median_resolution"])
    write_json(args.summary, summaries)  # the domain gap in numbers: resolution and lesion sizes per dataset


if __name__ == "__main__":
    main()
