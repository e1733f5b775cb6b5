"""Stage train: U-Net (ResNet34, scSE) on the train patches; the weights of the epoch that scores best on the
selection split (tune when the manifest has one, else val) with their recipe, per-epoch history, resumable after a
kill (also when DVC has deleted the outputs before rerunning the stage).

Data-parallel: with `train.processes` > 1 the stage runs itself under torchrun on this machine; on several
machines, start `torchrun --nnodes ... stages/train.py <the same arguments>` on each (docs/how-to/scale-out.md)."""
import argparse
from pathlib import Path

from micropatch.training.entrypoints import train_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("patches", "manifest", "model", "state", "history", "summary"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    train_stage(parser.parse_args(), Path(__file__))


if __name__ == "__main__":
    main()
