"""Stage preprocess: green channel + CLAHE, FOV mask and binary lesion masks per image; a fingerprint per dataset."""
import argparse
from pathlib import Path

from micropatch.data.entrypoints import preprocess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--summary", type=Path, required=True)
    preprocess(parser.parse_args())


if __name__ == "__main__":
    main()
