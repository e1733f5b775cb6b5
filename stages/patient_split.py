"""Stage patient-split: patient-isolated train/val split of the training datasets, before any patch exists."""
import argparse
from pathlib import Path

from micropatch.data.entrypoints import patient_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preprocessed", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    patient_split(parser.parse_args())


if __name__ == "__main__":
    main()
