"""Stage download: materialise every dataset of params `download.datasets` in data/raw/<name>/.

A source is a local folder, a local archive (.zip, DDR's .zip.001 parts, .tar.gz), an https URL with its sha256,
or `synthetic` (the generator in the adapter's layout; settings from the entry's `synthetic`). Downloads live in
data/downloads/, outside DVC's outputs, so an interrupted one resumes.
"""
import logging
from pathlib import Path

from micropatch import logs
from micropatch.datasets import load_records
from micropatch.io import load_params, write_json
from micropatch.sources import Limits, materialise

RAW = Path("data/raw")
DOWNLOADS = Path("data/downloads")


def main() -> None:
    logs.setup()
    params = load_params("download")
    limits = Limits(int(params["max_extracted_gib"] * 2**30), params["max_extracted_files"])
    datasets = []
    for entry in params["datasets"]:
        root = materialise(entry, RAW / entry["name"], DOWNLOADS, limits)
        records = load_records(entry["adapter"], root, entry["name"])  # fail here, not three stages later
        datasets.append({"name": entry["name"], "adapter": entry["adapter"], "root": str(root),
                         "images": len(records)})
        logging.info("download: %s (%s adapter): %d images", entry["name"], entry["adapter"], len(records))
    write_json(RAW / "datasets.json", datasets)


if __name__ == "__main__":
    main()
