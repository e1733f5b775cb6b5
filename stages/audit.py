"""Stage audit: fail the pipeline on any patient, byte, near-duplicate or patch-provenance leak across splits."""
import argparse
import sys
from pathlib import Path

from micropatch import logs
from micropatch.audit import run_audit
from micropatch.fileio import load_params


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--patches", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logs.setup()
    return run_audit(args.manifest, args.patches, args.out, load_params("audit")["phash_threshold"])


if __name__ == "__main__":
    sys.exit(main())
