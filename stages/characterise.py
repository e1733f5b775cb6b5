"""Stage characterise: each dataset's labelling style (per-image lesion count and mean lesion area, the study's
figure 2) and image-quality grades (its figure 1, by a transparent measure, not MCF-Net), as metrics and plots."""
import argparse
from pathlib import Path

from micropatch.data.entrypoints import characterise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--preprocessed", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the metrics JSON")
    parser.add_argument("--plots", type=Path, required=True, help="folder of one labelling and one quality CSV "
                                                                  "per dataset")
    characterise(parser.parse_args())


if __name__ == "__main__":
    main()
