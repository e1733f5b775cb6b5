"""Stage download: materialise every dataset of params `download.datasets` in <out>/<name>/.

A source is a local folder, a local archive (.zip, DDR's .zip.001 parts, .tar.gz), an https URL with its sha256,
or `synthetic` (the generator in the adapter's layout; settings from the entry's `synthetic`). Downloads live in
--downloads, outside DVC's outputs, so an interrupted one resumes."""
import argparse
from pathlib import Path

from micropatch.data.entrypoints import download


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--downloads", type=Path, required=True)
    download(parser.parse_args())


if __name__ == "__main__":
    main()
