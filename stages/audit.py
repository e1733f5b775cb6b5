"""Stage audit: fail the pipeline on any patient, byte, near-duplicate or patch-provenance leak across splits."""
import argparse
import sys
from pathlib import Path

from micropatch.data.entrypoints import audit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--patches", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    return audit(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
