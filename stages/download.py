"""Stage download: materialise every dataset of params `download.datasets` ({name, adapter, source}) in data/raw/."""
import logging
from pathlib import Path

from micropatch import logs
from micropatch.datasets import load_records
from micropatch.io import load_params, write_json
from micropatch.sources import materialise

RAW = "data/raw"


def main() -> None:
    logs.setup()
    params = load_params("download")
    datasets = []
    for entry in params["datasets"]:
        root = materialise(str(entry["source"]), Path(RAW) / entry["name"])
        records = load_records(entry["adapter"], root, entry["name"])  # fail here, not three stages later
        datasets.append({"name": entry["name"], "adapter": entry["adapter"], "root": str(root),
                         "images": len(records)})
        logging.info("download: %s (%s adapter): %d images", entry["name"], entry["adapter"], len(records))
    write_json(f"{RAW}/datasets.json", datasets)


if __name__ == "__main__":
    main()
