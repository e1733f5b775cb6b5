"""Stage score: pooled P/R/Dice/IoU, aupr_11, AP and lesion-level FROC per domain of `roles.test_on` and lesion.

Writes one metrics JSON per domain (<out>/domains/), the cross-domain table (markdown and JSON), per-image
tables, curve data for `dvc plots` and figures."""
import argparse
from pathlib import Path

from micropatch.evaluation.entrypoints import score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("predictions", "preprocessed", "manifest", "history", "out"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    score(parser.parse_args())


if __name__ == "__main__":
    main()
