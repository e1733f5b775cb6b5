"""Stage swa: stochastic weight averaging of one run (the cross-dataset study's SWA): the weights of the last
`train.swa_epochs` epochs averaged over the encoder, the decoder or the full model (the rest from the selected
model), then BatchNorm statistics recomputed on training patches. One model file per part, and its maps of every
test domain written by the infer stage's own code (inference.write_domain_maps), which the score stage reads like
any other (stage score-strategy). One process for all of it: the study runs this in each of its experiments."""
import argparse
from pathlib import Path

from micropatch.training.entrypoints import swa


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("epochs", "model", "patches", "manifest", "preprocessed", "out", "predictions"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    swa(parser.parse_args())


if __name__ == "__main__":
    main()
