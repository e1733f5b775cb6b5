"""Stage download: materialise every dataset of params `download.datasets` in <out>/<name>/.

A source is a local folder, a local archive (.zip, DDR's .zip.001 parts, .tar.gz), an https URL with its sha256,
or `synthetic` (the generator in the adapter's layout; settings from the entry's `synthetic`). Downloads live in
--downloads, outside DVC's outputs, so an interrupted one resumes.
"""
import argparse
import logging
from pathlib import Path

from micropatch import logs
from micropatch.datasets import load_records
from micropatch.fileio import InputError, load_params, write_json
from micropatch.sources import Limits, local_sources, materialise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--downloads", type=Path, required=True)
    args = parser.parse_args()
    logs.setup()
    params = load_params(path=args.params)
    declared = Path("dvc.yaml").read_text() if Path("dvc.yaml").is_file() else ""
    missing = [s for s in local_sources(params, Path.cwd()) if f"- {s}\n" not in declared]
    if missing:  # DVC would not notice when these change: the dependency list must be rewritten first
        raise InputError(f"download sources {missing} are not dependencies in dvc.yaml; run `micropatch pipeline` "
                         "after changing download.datasets")
    params = params["download"]
    limits = Limits(int(params["max_extracted_gib"] * 2**30), params["max_extracted_files"])
    datasets = []
    for entry in params["datasets"]:
        root = materialise(entry, args.out / entry["name"], args.downloads, limits)
        options = entry.get("options", {})  # the adapter's own (maples_dr: images; retinal_lesions: ...)
        records = load_records(entry["adapter"], root, entry["name"], **options)  # fail here, not three stages later
        datasets.append({"name": entry["name"], "adapter": entry["adapter"], "root": str(root),
                         "images": len(records), **({"options": options} if options else {})})
        logging.info("download: %s (%s adapter): %d images", entry["name"], entry["adapter"], len(records))
    write_json(args.out / "datasets.json", datasets)


if __name__ == "__main__":
    main()
