"""Stage patchify: 128x128 windows every 64 px of each train/tune/val image; all lesion windows, 10 % of background
(the paper's sampling), plus hard negatives and lesion-centred windows for the train split when params ask. Under
`recipe: study_baseline`, one square per image instead (micropatch.square), which train crops at random."""
import argparse
from pathlib import Path

from micropatch.data.entrypoints import patchify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--preprocessed", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    patchify(parser.parse_args())


if __name__ == "__main__":
    main()
