"""Stage preprocess: green channel + CLAHE, FOV mask and binary lesion masks per image; a fingerprint per dataset."""
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from tqdm import tqdm

from micropatch import logs
from micropatch.datasets import LESIONS, load_records
from micropatch.io import load_params, write_json
from micropatch.preprocessing import dataset_summary, preprocess_record

OUT = Path("data/preprocessed")
SUMMARY = Path("metrics/datasets.json")


def main() -> None:
    logs.setup()
    params = load_params("preprocess")
    summaries = {}
    for dataset in json.loads(Path("data/raw/datasets.json").read_text()):
        records = load_records(dataset["adapter"], dataset["root"], dataset["name"])
        work = partial(preprocess_record, out_dir=OUT / dataset["name"], lesions=list(LESIONS),
                       clip_limit=params["clahe_clip_limit"], grid=params["clahe_grid"],
                       fov_threshold=params["fov_threshold"])
        with ProcessPoolExecutor(params["workers"]) as pool:
            fingerprints = list(tqdm(pool.map(work, records), total=len(records), desc=dataset["name"], unit="img"))
        write_json(OUT / dataset["name"] / "fingerprint.json", {
            "dataset": dataset["name"], "adapter": dataset["adapter"], "images": fingerprints})
        summaries[dataset["name"]] = dataset_summary(fingerprints)
        logging.info("preprocess: %s: %d images, median %s", dataset["name"], len(fingerprints),
                     summaries[dataset["name"]]["median_resolution"])
    write_json(SUMMARY, summaries)  # the domain gap in numbers: resolution and lesion sizes per dataset


if __name__ == "__main__":
    main()
