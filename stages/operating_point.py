"""Stage operating-point: the released model, i.e. the trained weights with everything prediction needs in its
metadata: the operating point (threshold and minimum component area, chosen by pooled Dice on the tune split's
full images, never on val or a test domain; the paper's 0.5 and none without a tune split; a multi-lesion model
gets one per lesion, and a model-wide one from the lesions' mean Dice) and the training images' median FOV
diameter (for infer.rescale_fov). Infer, score and `micropatch predict` use this file."""
import argparse
from pathlib import Path

from micropatch.inference.entrypoints import operating_point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("model", "manifest", "preprocessed", "out", "report"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    operating_point(parser.parse_args())


if __name__ == "__main__":
    main()
